<?php
// A file upload through multipart/form-data: $_FILES.
header('Content-Type: application/json');
$files = [];
foreach ($_FILES as $field => $file) {
    $files[$field] = [
        'name' => $file['name'],
        'size' => $file['size'],
        'error' => $file['error'],
        'md5' => $file['error'] === UPLOAD_ERR_OK ? md5_file($file['tmp_name']) : null,
    ];
}
echo json_encode(['files' => $files, 'post' => $_POST]);
