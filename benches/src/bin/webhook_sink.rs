//! A webhook receiver for `benches/events_e2e.sh` (`RECEIVER=rust`): what a production receiver costs per event,
//! where the Python one of the tests costs ~270 µs of CPU. It checks every `X-Ftps-Signature` (HMAC-SHA256 of
//! the body), appends each valid body as one line to OUT and answers 200 on a kept-alive connection; a bad
//! signature gets 401.
//!
//! usage: webhook-sink SECRET OUT   (prints "listening on PORT" once it listens on 127.0.0.1)

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, secret, out] = &args[..] else {
        eprintln!("usage: webhook-sink SECRET OUT");
        std::process::exit(2);
    };
    let key = Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        secret.as_bytes(),
    ));
    let out = Arc::new(Mutex::new(
        OpenOptions::new().create(true).append(true).open(out)?,
    ));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening on {}", listener.local_addr()?.port());
    for stream in listener.incoming() {
        let (key, out) = (Arc::clone(&key), Arc::clone(&out));
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &key, &out) {
                eprintln!("webhook-sink: {e}");
            }
        });
    }
    Ok(())
}

/// Answers the requests of one connection until the peer closes it.
fn serve(
    stream: TcpStream,
    key: &ring::hmac::Key,
    out: &Mutex<std::fs::File>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        let (mut length, mut signature) = (0usize, String::new());
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let field = line.trim_end();
            if field.is_empty() {
                break;
            }
            if let Some((name, value)) = field.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("x-ftps-signature") {
                    signature = value.trim().to_owned();
                }
            }
        }
        let mut body = vec![0; length + 1];
        reader.read_exact(&mut body[..length])?;
        let valid = signature
            .strip_prefix("sha256=")
            .and_then(hex)
            .is_some_and(|tag| ring::hmac::verify(key, &body[..length], &tag).is_ok());
        let status = if valid {
            body[length] = b'\n';
            let mut file = out
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            file.write_all(&body)?;
            "200 OK"
        } else {
            "401 Unauthorized"
        };
        write!(writer, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n")?;
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}
