<?php
// ?n= pieces, one every ?ms= milliseconds, each flushed: a slow stream (disconnect tests).
while (ob_get_level() > 0) {
    ob_end_flush();  // php.ini's output_buffering would hold the pieces back
}
$n = (int)($_GET['n'] ?? 50);
$ms = (int)($_GET['ms'] ?? 100);
for ($i = 0; $i < $n; $i++) {
    echo "piece $i\n";
    flush();
    usleep($ms * 1000);
}
