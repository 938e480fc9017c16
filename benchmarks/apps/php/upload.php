<?php
$in = fopen("php://input", "rb");
$size = 0;
while (!feof($in)) {
    $size += strlen(fread($in, 65536));
}
echo $size;
