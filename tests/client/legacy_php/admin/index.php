<?php
// A directory index: /admin/ runs this file.
header('Content-Type: text/plain');
echo 'admin index at ', $_SERVER['SCRIPT_NAME'];
