<?php
// ?kib= KiB of body, flushed in 64 KiB pieces: the proxy must stream it.
$kib = (int)($_GET['kib'] ?? 1024);
for ($i = 0; $i < $kib / 64; $i++) {
    echo str_repeat(chr(ord('a') + $i % 26), 65536);
    flush();
}
