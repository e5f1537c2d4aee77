<?php
// Drive an FTPS server with PHP's ftp extension (ftp_ssl_connect: explicit FTPS, PROT P, resumes the control
// session on its data connections), for the interop tests and `cargo xtask bench`.
//
// Usage: php php_ftp.php HOST PORT USER PASSWORD STEP...
// Steps are those of ftplib_client.py (one session, in order; ':' separates arguments):
//   put:LOCAL:REMOTE  get:REMOTE:LOCAL  putdir:LOCALDIR:REMOTEDIR  getdir:REMOTEDIR:LOCALDIR
//   list[:DIR]  nlst[:DIR]  mlsd[:DIR]  mkd:DIR  del:REMOTE  size:REMOTE  rename:FROM:TO
//   resume-get:REMOTE:LOCAL  resume-put:LOCAL:REMOTE
// Prints one line per step and "elapsed STEP SECONDS"; exits non-zero on the first failure.
// PHP cannot choose the TLS version: the server's offer decides.

function fail(string $why): never {
    fwrite(STDERR, "php_ftp: $why\n");
    exit(1);
}

[$_, $host, $port, $user, $pass] = array_slice($argv, 0, 5);
$steps = array_slice($argv, 5);
$ftp = ftp_ssl_connect($host, (int)$port, 60) or fail("connect");
ftp_login($ftp, $user, $pass) or fail("login");
ftp_pasv($ftp, true) or fail("pasv");
foreach ($steps as $step) {
    $a = explode(':', $step);
    $op = $a[0];
    $started = microtime(true);
    switch ($op) {
    case 'put':
        ftp_put($ftp, $a[2], $a[1], FTP_BINARY) or fail("put $a[1]");
        echo "put $a[2]\n";
        break;
    case 'get':
        ftp_get($ftp, $a[2], $a[1], FTP_BINARY) or fail("get $a[1]");
        echo "get $a[1]\n";
        break;
    case 'putdir':
        $names = array_values(array_diff(scandir($a[1]), ['.', '..']));
        foreach ($names as $name) {
            ftp_put($ftp, "$a[2]/$name", "$a[1]/$name", FTP_BINARY) or fail("put $name");
        }
        echo "putdir " . count($names) . "\n";
        break;
    case 'getdir':
        @mkdir($a[2], 0777, true);
        $names = ftp_nlist($ftp, $a[1]);
        if ($names === false) fail("nlst $a[1]");
        foreach ($names as $name) {
            $name = basename($name);
            ftp_get($ftp, "$a[2]/$name", "$a[1]/$name", FTP_BINARY) or fail("get $name");
        }
        echo "getdir " . count($names) . "\n";
        break;
    case 'list':
        $lines = ftp_rawlist($ftp, $a[1] ?? '.');
        if ($lines === false) fail("list");
        foreach ($lines as $line) echo "list $line\n";
        break;
    case 'nlst':
        $names = ftp_nlist($ftp, $a[1] ?? '.');
        if ($names === false) fail("nlst");
        foreach ($names as $name) echo "nlst $name\n";
        break;
    case 'mlsd':
        $entries = ftp_mlsd($ftp, $a[1] ?? '.');
        if ($entries === false) fail("mlsd");
        foreach ($entries as $e) echo "mlsd {$e['name']} {$e['type']} " . ($e['size'] ?? '') . "\n";
        break;
    case 'mkd':
        ftp_mkdir($ftp, $a[1]) !== false or fail("mkd $a[1]");
        echo "mkd $a[1]\n";
        break;
    case 'del':
        ftp_delete($ftp, $a[1]) or fail("del $a[1]");
        echo "del $a[1]\n";
        break;
    case 'size':
        echo "size " . ftp_size($ftp, $a[1]) . "\n";
        break;
    case 'rename':
        ftp_rename($ftp, $a[1], $a[2]) or fail("rename $a[1]");
        echo "rename $a[1] $a[2]\n";
        break;
    case 'resume-get':
        clearstatcache();
        $have = file_exists($a[2]) ? filesize($a[2]) : 0;
        $out = fopen($a[2], 'ab') or fail("open $a[2]");
        ftp_fget($ftp, $out, $a[1], FTP_BINARY, $have) or fail("resume-get $a[1]");
        fclose($out);
        echo "resume-get $a[1] from $have\n";
        break;
    case 'resume-put':
        // FTP_AUTORESUME: SIZE, then REST and STOR from there (PHP skips that much of the local file).
        ftp_put($ftp, $a[2], $a[1], FTP_BINARY, FTP_AUTORESUME) or fail("resume-put $a[1]");
        echo "resume-put $a[2]\n";
        break;
    default:
        fail("unknown step $step");
    }
    printf("elapsed %s %.6f\n", $op, microtime(true) - $started);
}
ftp_close($ftp);
echo "done\n";
