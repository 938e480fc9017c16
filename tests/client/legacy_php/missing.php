<?php
// A page that does not exist, as PHP says it.
http_response_code(404);
echo 'no such page';
