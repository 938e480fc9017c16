<?php
// A visit counter in a PHP session, plus a second cookie: two Set-Cookie headers.
session_start();
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
setcookie('theme', 'dark', ['path' => '/legacy/']);
header('Content-Type: application/json');
echo json_encode(['visits' => $_SESSION['visits'], 'session' => session_id()]);
