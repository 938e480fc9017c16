<?php
// Answers after ?ms= milliseconds (the timeout tests).
usleep((int)($_GET['ms'] ?? 1000) * 1000);
echo 'late';
