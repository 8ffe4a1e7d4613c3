//! Echo server on fastwebsockets: `peer-fastwebsockets --listen IP:PORT`.
//!
//! The upgrade goes through hyper (fastwebsockets' `upgrade` feature), the way its
//! documentation sets up a server.

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use peers::{Peer, MAX_MESSAGE};
use std::process::ExitCode;

fn main() -> ExitCode {
    peers::main(
        Peer {
            name: "peer-fastwebsockets",
            library: "fastwebsockets",
        },
        |stream| async move {
            let http = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(upgrade_request))
                .with_upgrades();
            let _ = http.await;
        },
    )
}

async fn upgrade_request(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgrading) = upgrade::upgrade(&mut request)?;
    // The WebSocket runs in its own task once hyper has sent the 101 and let go of the socket;
    // unconstrained by tokio's cooperative budget, as in the crate's own echo benchmark.
    tokio::spawn(tokio::task::unconstrained(async move {
        let _ = echo(upgrading).await;
    }));
    Ok(response)
}

async fn echo(upgrading: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = upgrading.await?;
    // The defaults, stated: answer pings and complete the closing handshake automatically.
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    ws.set_max_message_size(MAX_MESSAGE);
    // Whole messages: fragments are joined before read_frame returns.
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
