<?php
// The front controller: every path that names no script lands here (try_files $uri /index.php).
header('Content-Type: application/json');
echo json_encode([
    'controller' => 'index',
    'script_name' => $_SERVER['SCRIPT_NAME'],
    'request_uri' => $_SERVER['REQUEST_URI'],
    'path_info' => $_SERVER['PATH_INFO'] ?? null,
]);
