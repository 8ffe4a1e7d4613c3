//! [`CloseReason`]: why a connection ended, the same on [`WebSocket`](crate::WebSocket) and
//! [`WsReader`](crate::WsReader).

use duplex_proto::{CloseCode, CloseFrame, ProtocolError};

/// Why a connection ended (or is ending): what
/// [`WebSocket::close_reason`](crate::WebSocket::close_reason) and
/// [`WsReader::close_reason`](crate::WsReader::close_reason) return once the closing
/// handshake started or the connection failed. `recv()` and the `Stream` end with `None` (or
/// one `Err` then `None`) in every case; ask this where the loop ends.
///
/// ```no_run
/// # async fn demo(mut ws: duplex::WebSocket<tokio::net::TcpStream>) {
/// use duplex::CloseReason;
/// while let Some(message) = ws.recv().await {
///     match message {
///         Ok(message) => println!("{message:?}"),
///         Err(e) => eprintln!("failed: {e}"), // then `None`
///     }
/// }
/// match ws.close_reason() {
///     Some(CloseReason::Peer(frame)) => println!("the peer closed: {frame:?}"),
///     Some(CloseReason::Local { reply }) => println!("we closed; the peer answered {reply:?}"),
///     Some(CloseReason::IdleTimeout) => println!("idle for too long: we closed with 1001"),
///     Some(CloseReason::Failed(e)) => println!("failed ({}): {e}", e.close_code().0),
///     Some(reason) => println!("ended: code {}", reason.code().0),
///     None => unreachable!("recv() returned None: the connection is over"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer started the closing handshake with this close frame (`None`: the frame had no
    /// status code, 1005). Includes a peer's error codes, e.g. 1011 from a failing server.
    Peer(Option<CloseFrame>),
    /// We started the closing handshake (`close`, `WsWriter::close`, `Sink::close`); `reply`
    /// is the peer's answering close frame, if it came.
    Local {
        /// The peer's answer.
        reply: Option<CloseFrame>,
    },
    /// Our `Config::idle_timeout` passed without a message: we closed with 1001
    /// `"idle timeout"`.
    IdleTimeout,
    /// The connection failed: the peer broke the protocol or a limit (we sent the close code of
    /// [`ProtocolError::close_code`]), no pong came within the pong timeout after a heartbeat
    /// ping (1011, [`ProtocolError::PongTimeout`]), the peer did not finish the closing
    /// handshake in time ([`ProtocolError::CloseTimeout`]), or the transport ended without a
    /// closing handshake ([`ProtocolError::UnexpectedEof`], 1006).
    Failed(ProtocolError),
    /// The transport failed (an I/O error) before any closing handshake (1006).
    Transport,
}

impl CloseReason {
    /// The close code that sums it up: the peer's code when it closed (1005 if its frame had
    /// none), the code of the peer's answer when we closed (1005 without one), 1001 for the
    /// idle timeout, the failure's code, 1006 for a transport failure.
    pub fn code(&self) -> CloseCode {
        match self {
            CloseReason::Peer(frame) | CloseReason::Local { reply: frame } => frame
                .as_ref()
                .map_or(CloseCode::NO_STATUS, |frame| frame.code),
            CloseReason::IdleTimeout => CloseCode::GOING_AWAY,
            CloseReason::Failed(e) => e.close_code(),
            CloseReason::Transport => CloseCode::ABNORMAL,
        }
    }

    /// Whether the connection ended as planned: a closing handshake with 1000, 1001 or no
    /// status code, started by either side (the idle timeout included).
    pub fn is_normal(&self) -> bool {
        match self {
            CloseReason::Failed(_) | CloseReason::Transport => false,
            _ => matches!(
                self.code(),
                CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS
            ),
        }
    }
}

/// Who started the closing handshake, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Started {
    /// Not yet (still open), or not seen.
    #[default]
    Unknown,
    Peer,
    Us,
    IdleTimeout,
}

/// The reason from the protocol state and what the driver recorded.
pub(crate) fn close_reason(
    conn: &duplex_proto::Connection,
    started: Started,
    transport_done: bool,
) -> Option<CloseReason> {
    if let Some(error) = conn.error() {
        return Some(CloseReason::Failed(error.clone()));
    }
    let received = || conn.close_received().cloned().flatten();
    let started = match started {
        Started::Unknown => infer_started(conn),
        known => known,
    };
    match started {
        Started::Peer => Some(CloseReason::Peer(received())),
        Started::Us => Some(CloseReason::Local { reply: received() }),
        Started::IdleTimeout => Some(CloseReason::IdleTimeout),
        Started::Unknown if transport_done => Some(CloseReason::Transport),
        Started::Unknown => None,
    }
}

/// Who started the closing handshake, judged from the state now: the peer if its close frame
/// is already in when the state leaves `Open`.
pub(crate) fn infer_started(conn: &duplex_proto::Connection) -> Started {
    if conn.state() == duplex_proto::State::Open {
        Started::Unknown
    } else if conn.close_received().is_some() {
        Started::Peer
    } else if conn.error().is_none() {
        Started::Us
    } else {
        Started::Unknown
    }
}
