<?php
// A redirect after a form: Location without Status is a 302.
header('Location: ' . dirname($_SERVER['SCRIPT_NAME']) . '/form.php?sent=1');
