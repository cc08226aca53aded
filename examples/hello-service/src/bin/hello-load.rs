//! hello-load: the load generator of `bench/reload.sh` — the same client mix as the
//! zero-downtime test (keep-alive and new-connection clients, blocking threads), run for a
//! fixed time against an address, printing one JSON line: every request classified (ok,
//! refused, reset, timeout, wrong) and latency percentiles in microseconds.
//!
//! usage: hello-load ADDRESS SECONDS [CLIENTS] [KEEP_ALIVE_CLIENTS]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counts {
    ok: u64,
    refused: u64,
    reset: u64,
    timeout: u64,
    wrong: u64,
    latencies: Vec<u32>,
}

fn classify(error: &std::io::Error) -> fn(&mut Counts) {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => |c| c.refused += 1,
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => |c| c.timeout += 1,
        std::io::ErrorKind::InvalidData => |c| c.wrong += 1,
        _ => |c| c.reset += 1,
    }
}

/// One GET / on `stream`; Ok(close) when a 200 with a body arrived.
fn request(reader: &mut BufReader<TcpStream>) -> std::io::Result<bool> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response");
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if !line.starts_with("HTTP/1.1 200") {
        return Err(invalid());
    }
    let (mut length, mut close) = (None, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        } else if header == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0u8; length.ok_or_else(invalid)?];
    reader.read_exact(&mut body)?;
    if body.is_empty() || body.last() != Some(&b'\n') {
        return Err(invalid());
    }
    Ok(close)
}

fn client(address: SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>) -> Counts {
    let mut counts = Counts::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if connection.is_none() {
            match TcpStream::connect_timeout(&address, TIMEOUT) {
                Ok(stream) => {
                    let _ = stream.set_read_timeout(Some(TIMEOUT));
                    let _ = stream.set_write_timeout(Some(TIMEOUT));
                    let _ = stream.set_nodelay(true);
                    connection = Some(BufReader::new(stream));
                }
                Err(error) => {
                    classify(&error)(&mut counts);
                    // A refused connect returns at once; do not spin.
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        let reader = connection.as_mut().expect("connected above");
        match request(reader) {
            Ok(close) => {
                counts.ok += 1;
                counts
                    .latencies
                    .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if close || !keep_alive {
                    connection = None;
                }
            }
            Err(error) => {
                classify(&error)(&mut counts);
                connection = None;
            }
        }
    }
    counts
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if arguments.len() < 2 {
        eprintln!("usage: hello-load ADDRESS SECONDS [CLIENTS] [KEEP_ALIVE_CLIENTS]");
        std::process::exit(2);
    }
    let address: SocketAddr = arguments[0].parse().expect("ADDRESS is IP:PORT");
    let seconds: f64 = arguments[1].parse().expect("SECONDS is a number");
    let clients: usize = arguments
        .get(2)
        .map(|value| value.parse().expect("CLIENTS"))
        .unwrap_or(32);
    let keep_alive_clients: usize = arguments
        .get(3)
        .map(|value| value.parse().expect("KEEP_ALIVE_CLIENTS"))
        .unwrap_or(clients * 3 / 4);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|index| {
            let stop = stop.clone();
            std::thread::spawn(move || client(address, index < keep_alive_clients, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::SeqCst);
    let mut total = Counts::default();
    for thread in threads {
        let counts = thread.join().expect("client thread");
        total.ok += counts.ok;
        total.refused += counts.refused;
        total.reset += counts.reset;
        total.timeout += counts.timeout;
        total.wrong += counts.wrong;
        total.latencies.extend(counts.latencies);
    }
    total.latencies.sort_unstable();
    let percentile = |p: f64| -> u32 {
        if total.latencies.is_empty() {
            return 0;
        }
        let index = ((total.latencies.len() as f64 * p).ceil() as usize)
            .clamp(1, total.latencies.len())
            - 1;
        total.latencies[index]
    };
    println!(
        "{{\"requests\":{},\"ok\":{},\"refused\":{},\"reset\":{},\"timeout\":{},\"wrong\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        total.ok + total.refused + total.reset + total.timeout + total.wrong,
        total.ok,
        total.refused,
        total.reset,
        total.timeout,
        total.wrong,
        percentile(0.50),
        percentile(0.99),
        total.latencies.last().copied().unwrap_or(0),
    );
}
