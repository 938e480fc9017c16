<?php
// What the script sees: the CGI params, headers and body.
header('Content-Type: application/json');
$keys = ['SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_INFO', 'REQUEST_URI', 'DOCUMENT_URI',
    'DOCUMENT_ROOT', 'QUERY_STRING', 'REQUEST_METHOD', 'HTTPS', 'REQUEST_SCHEME', 'REMOTE_ADDR',
    'REMOTE_PORT', 'SERVER_NAME', 'SERVER_PORT', 'HTTP_HOST', 'HTTP_PROXY', 'HTTP_X_TEST',
    'CONTENT_LENGTH', 'CONTENT_TYPE', 'HTTP_TRANSFER_ENCODING'];
$server = [];
foreach ($keys as $key) {
    $server[$key] = $_SERVER[$key] ?? null;
}
$input = file_get_contents('php://input');
echo json_encode(['server' => $server, 'get' => $_GET, 'input_md5' => md5($input),
    'input_length' => strlen($input)]);
