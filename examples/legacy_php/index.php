<?php
// The "legacy" PHP application of examples/php_mount.py: a session counter and a form.
session_start();
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
$name = htmlspecialchars($_POST['name'] ?? 'stranger');
$self = htmlspecialchars($_SERVER['SCRIPT_NAME']);
echo "<!doctype html><title>PHP under Starlette</title>";
echo "<h1>Hello, $name, from PHP ", PHP_VERSION, "</h1>";
echo "<p>Visit number {$_SESSION['visits']} of this session; you asked for ",
    htmlspecialchars($_SERVER['REQUEST_URI']), ".</p>";
echo "<form method='post' action='$self'><input name='name'> <button>Send</button></form>";
