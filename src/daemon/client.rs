//! The client side of the control socket: what `vxmesh CMD --node NAME` runs. It sends one
//! [`Request`], prints the node's replies as they come and returns the exit code the last one
//! carries. Control plane, off the packet path: plain blocking I/O, no runtime.

use std::path::Path;

use super::{EXIT_FAILURE, Reply, Request};

/// The client side: send `req` to the node at `control`, print its replies, return the exit
/// code.
pub fn client(control: &Path, req: &Request) -> u8 {
    use std::io::{BufRead, Write};
    // One request and its replies, in order: plain blocking I/O, no runtime needed.
    let stream = match std::os::unix::net::UnixStream::connect(control) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "vxmesh: cannot reach a node at {}: {e} (is `vxmesh run` running with this control socket?)",
                control.display()
            );
            return EXIT_FAILURE;
        }
    };
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    // A node that refuses the connection (too many, not permitted) says why and closes, maybe
    // before the request is written: read its replies even when the write failed.
    let wrote = (&stream).write_all(line.as_bytes());
    for l in std::io::BufReader::new(&stream).lines() {
        let l = match l {
            Ok(l) => l,
            Err(e) => {
                eprintln!("vxmesh: {e}");
                return EXIT_FAILURE;
            }
        };
        match serde_json::from_str::<Reply>(&l) {
            Ok(Reply::Out(s)) => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(s.as_bytes());
                let _ = o.flush();
            }
            Ok(Reply::Err(s)) => eprintln!("vxmesh: {s}"),
            Ok(Reply::Exit(code)) => return code,
            Err(e) => {
                eprintln!("vxmesh: bad reply from the node: {e}");
                return EXIT_FAILURE;
            }
        }
    }
    match wrote {
        Err(e) => eprintln!("vxmesh: {}: {e}", control.display()),
        Ok(()) => eprintln!("vxmesh: the node closed the connection"),
    }
    EXIT_FAILURE
}
