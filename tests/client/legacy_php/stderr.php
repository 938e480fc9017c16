<?php
// Writes ?n= lines on STDERR (FastCGI's error stream) and answers.
$n = (int)($_GET['n'] ?? 1);
for ($i = 1; $i <= $n; $i++) {
    error_log("legacy warning $i");
}
echo 'ok';
