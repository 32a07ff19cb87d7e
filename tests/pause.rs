//! A paused process (issue 13, item 7) against the real binary: requests that reached the
//! server's socket while it was stopped (`SIGSTOP`) are all answered once it continues, on
//! connections a client was keeping alive as on new ones.

#[path = "support/binary.rs"]
mod binary;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use binary::Server;

/// Connections a client keeps alive across the pause, and new ones opened during it.
const KEPT_ALIVE: usize = 20;
const OPENED_DURING_PAUSE: usize = 20;
/// How long the server stays stopped. Longer than actix-web's default keep-alive (5 s), which
/// closed every kept-alive connection unanswered on resume. This wait is the scenario itself
/// (a process paused by a debugger, a container freeze, a VM migration), not a synchronisation.
const PAUSE: Duration = Duration::from_secs(6);
/// Longest wait for a reply once the server continues.
const READ_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn requests_sent_while_the_server_was_paused_are_all_answered_when_it_continues() {
    let server = Server::start("warn", |_| {});
    let address = server.url.trim_start_matches("http://").to_owned();
    let pid = Pid::from_raw(i32::try_from(server.pid()).unwrap());

    // Connections in a client's pool: each has served one request and stays open.
    let mut kept: Vec<TcpStream> = (0..KEPT_ALIVE)
        .map(|_| {
            let mut connection = connect(&address);
            connection
                .write_all(format!("GET /ok HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
                .unwrap();
            let (status, _) = read_one_reply(&mut connection);
            assert_eq!(status, 200);
            connection
        })
        .collect();

    kill(pid, Signal::SIGSTOP).unwrap();
    let request = wait_request(&address);
    for connection in &mut kept {
        connection.write_all(request.as_bytes()).unwrap();
    }
    // The kernel completes these handshakes and buffers the requests while the server sleeps.
    let mut opened: Vec<TcpStream> = (0..OPENED_DURING_PAUSE)
        .map(|_| {
            let mut connection = connect(&address);
            connection.write_all(request.as_bytes()).unwrap();
            connection
        })
        .collect();
    std::thread::sleep(PAUSE);
    kill(pid, Signal::SIGCONT).unwrap();

    let mut unanswered = Vec::new();
    for (index, connection) in kept.iter_mut().chain(opened.iter_mut()).enumerate() {
        let mut reply = Vec::new();
        let _ = connection.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        let kind = if index < KEPT_ALIVE { "kept" } else { "new" };
        if !reply.starts_with("HTTP/1.1 200") || !reply.contains("\"messages\"") {
            unanswered.push(format!(
                "{kind} connection {index}: {:?}",
                first_line(&reply)
            ));
        }
    }
    assert!(
        unanswered.is_empty(),
        "{} of {} requests sent during the pause were not answered: {unanswered:?}",
        unanswered.len(),
        KEPT_ALIVE + OPENED_DURING_PAUSE
    );
}

fn connect(address: &str) -> TcpStream {
    let connection = TcpStream::connect(address).unwrap();
    connection.set_read_timeout(Some(READ_DEADLINE)).unwrap();
    connection
}

/// A stateless `/runs/wait` of the `echo` graph whose connection closes after its reply, so
/// the reply is read to its end.
fn wait_request(address: &str) -> String {
    let body = r#"{"assistant_id": "echo", "input": {"messages": []}}"#;
    format!(
        "POST /runs/wait HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one reply with a `Content-Length` off a kept-alive connection: its status and body.
fn read_one_reply(connection: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        connection.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a reply with a Content-Length");
    let mut body = vec![0u8; length];
    connection.read_exact(&mut body).unwrap();
    (status, body)
}

fn first_line(reply: &str) -> &str {
    reply
        .lines()
        .next()
        .unwrap_or("(connection closed without a reply)")
}
