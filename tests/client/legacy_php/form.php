<?php
// A form: GET shows it, POST echoes the fields.
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    header('Content-Type: application/json');
    echo json_encode(['post' => $_POST]);
    return;
}
echo '<form method="post"><input name="name"><button>Send</button></form>';
