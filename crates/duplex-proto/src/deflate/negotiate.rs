//! permessage-deflate parameter negotiation (RFC 7692 §5 and §7.1).
//!
//! The server walks the client's offers and accepts the first one it can honour
//! ([`negotiate_server`]); the client checks the one element the server sent back
//! ([`negotiate_client`]). Both produce an [`Agreed`]: the settings each direction uses,
//! seen from our own role.

use crate::extension::{Extension, ExtensionParam};
use crate::Role;

/// The extension token registered by RFC 7692 §7.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// Smallest LZ77 window size RFC 7692 §7.1.2 allows, as a base-2 logarithm (256 bytes).
pub const MIN_WINDOW_BITS: u8 = 8;
/// Largest LZ77 window size RFC 7692 §7.1.2 allows, as a base-2 logarithm (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;

/// What this endpoint is willing to negotiate, and how it compresses.
///
/// The same structure serves both roles; each field says what it means for a client and
/// for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Offer (client) or accept (server) permessage-deflate at all.
    ///
    /// Default `false`: compression costs memory per active connection (see
    /// [`DeflateCodec`](super::DeflateCodec): about 370 KiB for a compressor plus 46 KiB for
    /// a decompressor) and CPU, and compressing secrets together with attacker-chosen data
    /// leaks information through message lengths (the CRIME/BREACH family). It is a
    /// deliberate choice for the application, not a default.
    pub enabled: bool,
    /// Reset the server's compression context after every message.
    ///
    /// A client asks for it in its offer; a server always imposes it in its response
    /// (RFC 7692 §7.1.1.1 lets the server add it even when not offered). It lets the server
    /// forget its compressor between messages (see `low_memory`) at the price of ratio.
    /// Default `false`: with context takeover, small JSON-like messages compressed to about
    /// 20% of their size in our measurements, against about 96% without it.
    pub server_no_context_takeover: bool,
    /// Reset the client's compression context after every message.
    ///
    /// A client announces it in its offer and then honours it; a server imposes it in its
    /// response (RFC 7692 §7.1.1.2), which lets it drop or reset its decompressor between
    /// messages. Default `false`, for the same ratio reason as above.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window (base-2 log, 8..=15) the server compresses with.
    ///
    /// As a server: the window of our own compressor; a smaller one offered by the client
    /// wins. As a client: below 15 we ask the server for it (`server_max_window_bits=N`) and
    /// fail the connection if the server does not acknowledge it. Values outside 8..=15 are
    /// clamped. Default 15: the smallest window saves at most ~126 KiB of the compressor's
    /// ~371 KiB with zlib-rs (measured), while costing ratio.
    pub server_max_window_bits: u8,
    /// Largest LZ77 window (base-2 log, 8..=15) the client compresses with.
    ///
    /// As a client: the window we promise not to exceed (sent as `client_max_window_bits=N`
    /// when below 15; without a value otherwise, to say we support the parameter). As a
    /// server: what we ask the client for when its offer carries the parameter. A server
    /// accepts offers without the parameter whatever this value, since zlib-rs allocates
    /// the same 46 KiB inflate state for every window size: limiting the client's window
    /// only saves the client's memory. Values outside 8..=15 are clamped. Default 15.
    pub client_max_window_bits: u8,
    /// zlib compression level, 0 (store) to 9 (best). Larger values are clamped to 9.
    ///
    /// Default 1. Measured with zlib-rs on ~100-byte JSON messages with context takeover:
    /// level 1 ran at ~210 MB/s for a ratio of 0.199, levels 2..=9 at ~17-20 MB/s for
    /// 0.184-0.196 (level 1 uses the "quick" strategy with static Huffman codes, higher
    /// levels build dynamic trees for every sync-flushed message). On a 200 KiB message,
    /// level 1 reached 0.18 at 470 MB/s, level 6 0.11 at 115 MB/s. WebSocket traffic is
    /// mostly small messages, where level 1 is ten times cheaper for a few percent.
    pub compression_level: u32,
    /// Messages shorter than this many bytes are sent uncompressed.
    ///
    /// Default 32. Without context takeover, deflate makes JSON messages under roughly
    /// 96 bytes *larger* by ~2 bytes (measured), but with context takeover even 16-byte
    /// messages shrink to ~45% and 32-byte ones to ~23%. Below 32 bytes the absolute saving
    /// is at most a couple dozen bytes, not worth a compressor pass and a flush.
    pub min_compress_size: usize,
    /// Free the compressor or decompressor after each message of a direction without
    /// context takeover, instead of resetting it in place.
    ///
    /// An idle connection then holds no deflate state at all (both are created lazily, on
    /// first use, in any case), at the cost of one allocation and initialisation per
    /// message. Default `false`. Measured per ~100-byte message at level 1: resetting the
    /// compressor costs ~3.6 µs and re-creating it ~6.6 µs (compressing itself, with context
    /// takeover, ~0.15 µs); for the decompressor ~0.4 µs against ~0.9 µs. Choose it when
    /// many connections sit idle and memory, not CPU, is the limit.
    pub low_memory: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: false,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            compression_level: 1,
            min_compress_size: 32,
            low_memory: false,
        }
    }
}

fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

/// The `client_max_window_bits` parameter as it appeared in an offer or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBits {
    /// Present without a value: the client supports the parameter and may use any window
    /// (only valid in an offer, RFC 7692 §7.1.2.2).
    Supported,
    /// Present with a value: the largest window, as a base-2 logarithm in 8..=15.
    Max(u8),
}

/// The parameters of one `permessage-deflate` element, validated (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    /// `server_no_context_takeover` was present.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover` was present.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits` value, if present.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`, if present.
    pub client_max_window_bits: Option<ClientBits>,
}

/// Whether an element is a client's offer or a server's response: the only difference
/// in syntax is that a response must give `client_max_window_bits` a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Offer,
    Response,
}

/// A `permessage-deflate` element whose parameters break RFC 7692 §7.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidParams {
    /// The element is not `permessage-deflate` at all.
    #[error("extension {0:?} is not permessage-deflate")]
    NotPermessageDeflate(String),
    /// A parameter RFC 7692 does not define (§7.1: must decline / fail).
    #[error("unknown permessage-deflate parameter {0:?}")]
    UnknownParameter(String),
    /// The same parameter twice (§7.1).
    #[error("permessage-deflate parameter {0} given more than once")]
    DuplicateParameter(&'static str),
    /// A value on a parameter that takes none (§7.1.1.1, §7.1.1.2).
    #[error("permessage-deflate parameter {0} takes no value")]
    UnexpectedValue(&'static str),
    /// No value on a parameter that needs one here (§7.1.2.1 always; §7.1.2.2 in a
    /// response).
    #[error("permessage-deflate parameter {0} needs a value")]
    MissingValue(&'static str),
    /// A window size that is not a decimal integer in 8..=15 without leading zeros
    /// (§7.1.2.1, §7.1.2.2).
    #[error(
        "permessage-deflate parameter {param} has invalid window bits {value:?} (want 8..=15)"
    )]
    InvalidWindowBits {
        /// The parameter.
        param: &'static str,
        /// The value as received.
        value: String,
    },
}

/// Parses a window-bits value: `1*DIGIT` without leading zero, 8..=15 (RFC 7692 §7.1.2).
fn parse_window_bits(param: &'static str, value: &str) -> Result<u8, InvalidParams> {
    let invalid = || InvalidParams::InvalidWindowBits {
        param,
        value: value.to_owned(),
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > 2
        || bytes[0] == b'0'
        || !bytes.iter().all(u8::is_ascii_digit)
    {
        return Err(invalid());
    }
    let bits: u8 = value.parse().map_err(|_| invalid())?;
    if (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) {
        Ok(bits)
    } else {
        Err(invalid())
    }
}

fn no_value(param: &ExtensionParam, name: &'static str) -> Result<(), InvalidParams> {
    match param.value {
        None => Ok(()),
        Some(_) => Err(InvalidParams::UnexpectedValue(name)),
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), InvalidParams> {
    if slot.is_some() {
        return Err(InvalidParams::DuplicateParameter(name));
    }
    *slot = Some(value);
    Ok(())
}

impl DeflateParams {
    /// Validates the parameters of a client's offer (RFC 7692 §7.1).
    pub fn from_offer(ext: &Extension) -> Result<Self, InvalidParams> {
        Self::parse(ext, Side::Offer)
    }

    /// Validates the parameters of a server's response (RFC 7692 §7.1); unlike an offer,
    /// `client_max_window_bits` must carry a value.
    pub fn from_response(ext: &Extension) -> Result<Self, InvalidParams> {
        Self::parse(ext, Side::Response)
    }

    fn parse(ext: &Extension, side: Side) -> Result<Self, InvalidParams> {
        if ext.name != PERMESSAGE_DEFLATE {
            return Err(InvalidParams::NotPermessageDeflate(ext.name.clone()));
        }
        let mut server_nct = None;
        let mut client_nct = None;
        let mut server_bits = None;
        let mut client_bits = None;
        for p in &ext.params {
            match p.name.as_str() {
                SERVER_NO_CONTEXT_TAKEOVER => {
                    no_value(p, SERVER_NO_CONTEXT_TAKEOVER)?;
                    set_once(&mut server_nct, (), SERVER_NO_CONTEXT_TAKEOVER)?;
                }
                CLIENT_NO_CONTEXT_TAKEOVER => {
                    no_value(p, CLIENT_NO_CONTEXT_TAKEOVER)?;
                    set_once(&mut client_nct, (), CLIENT_NO_CONTEXT_TAKEOVER)?;
                }
                SERVER_MAX_WINDOW_BITS => {
                    let value = p
                        .value
                        .as_deref()
                        .ok_or(InvalidParams::MissingValue(SERVER_MAX_WINDOW_BITS))?;
                    let bits = parse_window_bits(SERVER_MAX_WINDOW_BITS, value)?;
                    set_once(&mut server_bits, bits, SERVER_MAX_WINDOW_BITS)?;
                }
                CLIENT_MAX_WINDOW_BITS => {
                    let bits = match (p.value.as_deref(), side) {
                        (Some(v), _) => {
                            ClientBits::Max(parse_window_bits(CLIENT_MAX_WINDOW_BITS, v)?)
                        }
                        (None, Side::Offer) => ClientBits::Supported,
                        (None, Side::Response) => {
                            return Err(InvalidParams::MissingValue(CLIENT_MAX_WINDOW_BITS))
                        }
                    };
                    set_once(&mut client_bits, bits, CLIENT_MAX_WINDOW_BITS)?;
                }
                other => return Err(InvalidParams::UnknownParameter(other.to_owned())),
            }
        }
        Ok(DeflateParams {
            server_no_context_takeover: server_nct.is_some(),
            client_no_context_takeover: client_nct.is_some(),
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        })
    }

    /// Renders these parameters as a `permessage-deflate` element, in a fixed order.
    pub fn to_extension(&self) -> Extension {
        let mut params = Vec::new();
        let flag = |name: &str| ExtensionParam {
            name: name.to_owned(),
            value: None,
        };
        let valued = |name: &str, bits: u8| ExtensionParam {
            name: name.to_owned(),
            value: Some(bits.to_string()),
        };
        if self.server_no_context_takeover {
            params.push(flag(SERVER_NO_CONTEXT_TAKEOVER));
        }
        if self.client_no_context_takeover {
            params.push(flag(CLIENT_NO_CONTEXT_TAKEOVER));
        }
        if let Some(bits) = self.server_max_window_bits {
            params.push(valued(SERVER_MAX_WINDOW_BITS, bits));
        }
        match self.client_max_window_bits {
            Some(ClientBits::Supported) => params.push(flag(CLIENT_MAX_WINDOW_BITS)),
            Some(ClientBits::Max(bits)) => params.push(valued(CLIENT_MAX_WINDOW_BITS, bits)),
            None => {}
        }
        Extension {
            name: PERMESSAGE_DEFLATE.to_owned(),
            params,
        }
    }
}

/// The settings of one direction of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectionParams {
    /// The largest LZ77 window the sender of this direction may use, as a base-2 logarithm
    /// (8..=15). A negotiated 8 is compressed with zlib's 9; see the module documentation.
    pub max_window_bits: u8,
    /// The sender resets its compression context after every message, so the receiver may
    /// reset (or drop) its decompressor too.
    pub no_context_takeover: bool,
}

impl DirectionParams {
    const DEFAULT: DirectionParams = DirectionParams {
        max_window_bits: MAX_WINDOW_BITS,
        no_context_takeover: false,
    };
}

/// The concrete permessage-deflate settings both ends use, seen from our role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// Which end we are.
    pub role: Role,
    /// Messages we compress (server→client for a server, client→server for a client).
    pub outgoing: DirectionParams,
    /// Messages the peer compresses and we decompress.
    pub incoming: DirectionParams,
}

/// Server: picks the first acceptable `permessage-deflate` offer and builds the response.
///
/// Offers are walked in the client's order of preference (RFC 7692 §5). Other extensions
/// are skipped; invalid offers (§5.1: unknown or duplicate parameter, invalid value) are
/// declined, which is not an error: the next offer is tried, and with none left the
/// connection simply runs uncompressed. Returns `None` when disabled or nothing was
/// acceptable, otherwise the agreed settings and the element to send back in
/// `Sec-WebSocket-Extensions`.
///
/// Every valid offer can be honoured: a requested `server_max_window_bits` (even 8) is
/// granted, `server_no_context_takeover` is granted, and our own policy is added on top
/// (§7.1.1.1, §7.1.1.2, §7.1.2.1 let the server add these).
pub fn negotiate_server(
    offers: &[Extension],
    config: &DeflateConfig,
) -> Option<(Agreed, Extension)> {
    if !config.enabled {
        return None;
    }
    offers
        .iter()
        .filter(|e| e.name == PERMESSAGE_DEFLATE)
        .filter_map(|e| DeflateParams::from_offer(e).ok())
        .find_map(|offer| accept_offer(&offer, config))
}

/// Decides on one valid offer; `None` declines it.
fn accept_offer(offer: &DeflateParams, config: &DeflateConfig) -> Option<(Agreed, Extension)> {
    // §7.1.2.1: accepting a requested limit means answering with the same or a smaller
    // value; without a request we may still announce our own limit.
    let our_server_bits = clamp_bits(config.server_max_window_bits);
    let server_bits = offer
        .server_max_window_bits
        .map_or(our_server_bits, |asked| asked.min(our_server_bits));
    let respond_server_bits = (offer.server_max_window_bits.is_some()
        || server_bits < MAX_WINDOW_BITS)
        .then_some(server_bits);

    // §7.1.2.2: the response may carry client_max_window_bits only if the offer did. If it
    // did not, the client may use a 32 KiB window; we accept that (our inflater always
    // uses one; see `DeflateConfig::client_max_window_bits`).
    let wanted_client_bits = clamp_bits(config.client_max_window_bits);
    let (client_bits, respond_client_bits) = match offer.client_max_window_bits {
        None => (MAX_WINDOW_BITS, None),
        Some(ClientBits::Supported) => (
            wanted_client_bits,
            (wanted_client_bits < MAX_WINDOW_BITS).then_some(wanted_client_bits),
        ),
        // The client promised not to exceed its value; we may ask for less (§7.1.2.2).
        Some(ClientBits::Max(promised)) => {
            let bits = promised.min(wanted_client_bits);
            (bits, (bits < MAX_WINDOW_BITS).then_some(bits))
        }
    };

    // §7.1.1.1: a requested server_no_context_takeover is accepted by echoing it; we may
    // also impose it. §7.1.1.2: echoing an offered client_no_context_takeover lets us
    // reset our decompressor, and we may impose it too.
    let server_nct = offer.server_no_context_takeover || config.server_no_context_takeover;
    let client_nct = offer.client_no_context_takeover || config.client_no_context_takeover;

    let response = DeflateParams {
        server_no_context_takeover: server_nct,
        client_no_context_takeover: client_nct,
        server_max_window_bits: respond_server_bits,
        client_max_window_bits: respond_client_bits.map(ClientBits::Max),
    };
    let agreed = Agreed {
        role: Role::Server,
        outgoing: DirectionParams {
            max_window_bits: server_bits,
            no_context_takeover: server_nct,
        },
        incoming: DirectionParams {
            max_window_bits: client_bits,
            no_context_takeover: client_nct,
        },
    };
    Some((agreed, response.to_extension()))
}

/// The parameters a client offers for a given configuration.
fn offer_params(config: &DeflateConfig) -> DeflateParams {
    let server_bits = clamp_bits(config.server_max_window_bits);
    let client_bits = clamp_bits(config.client_max_window_bits);
    DeflateParams {
        server_no_context_takeover: config.server_no_context_takeover,
        client_no_context_takeover: config.client_no_context_takeover,
        server_max_window_bits: (server_bits < MAX_WINDOW_BITS).then_some(server_bits),
        // Always sent, so the server may lower our window (§7.1.2.2); we can honour any
        // value it picks.
        client_max_window_bits: Some(if client_bits < MAX_WINDOW_BITS {
            ClientBits::Max(client_bits)
        } else {
            ClientBits::Supported
        }),
    }
}

/// Client: the single `permessage-deflate` offer for `config`.
///
/// Send it only when `config.enabled`. It always carries `client_max_window_bits` (with a
/// value when ours is below 15), and carries `server_max_window_bits` and the
/// no-context-takeover flags as configured.
pub fn client_offer(config: &DeflateConfig) -> Extension {
    offer_params(config).to_extension()
}

/// The server's response cannot be accepted: the client must fail the connection
/// (RFC 7692 §5.1, RFC 6455 §9.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeflateNegotiationError {
    /// The response names permessage-deflate more than once; a server accepts at most one
    /// offer (RFC 7692 §5).
    #[error("server response contains permessage-deflate more than once")]
    DuplicateExtension,
    /// The response names permessage-deflate although we did not offer it (RFC 6455 §9.1).
    #[error("server accepted permessage-deflate, which was not offered")]
    NotOffered,
    /// A parameter breaks RFC 7692 §7.1 syntax (unknown, duplicate, bad value).
    #[error("invalid permessage-deflate response: {0}")]
    InvalidParams(#[from] InvalidParams),
    /// `client_max_window_bits` in the response, but not in our offer (§7.1.2.2).
    #[error("server sent client_max_window_bits, which the offer did not contain")]
    UnrequestedClientMaxWindowBits,
    /// `server_max_window_bits` larger than we asked for (§7.1.2.1).
    #[error("server_max_window_bits={got} exceeds the {offered} we offered")]
    ServerWindowTooLarge {
        /// What we asked for.
        offered: u8,
        /// What the server answered.
        got: u8,
    },
    /// We asked for `server_max_window_bits` and the response lacks it: the server did not
    /// accept the limit as §7.1.2.1 defines acceptance.
    #[error("server did not acknowledge server_max_window_bits={offered}")]
    ServerWindowNotAcknowledged {
        /// What we asked for.
        offered: u8,
    },
    /// We asked for `server_no_context_takeover` and the response lacks it: the server did
    /// not accept it as §7.1.1.1 defines acceptance.
    #[error("server did not acknowledge server_no_context_takeover")]
    ServerContextTakeoverNotAcknowledged,
}

/// Client: checks the server's `Sec-WebSocket-Extensions` response.
///
/// `Ok(None)`: the server declined compression. `Ok(Some(_))`: the settings to use.
/// `Err(_)`: the response is invalid and the client must fail the connection (RFC 7692
/// §5.1): more than one `permessage-deflate` element, one we did not offer, a parameter
/// that is unknown, duplicated or malformed, `client_max_window_bits` without our offer,
/// `server_max_window_bits` above (or missing after) our request, or our requested
/// `server_no_context_takeover` not echoed. Other extensions in `response` are ignored
/// here; the handshake checks them.
///
/// A `client_max_window_bits` larger than the value we offered is tolerated (§7.1.2.2
/// asks the server for "equal to or smaller"): we keep to our own, smaller window, which
/// every reading allows.
pub fn negotiate_client(
    response: &[Extension],
    config: &DeflateConfig,
) -> Result<Option<Agreed>, DeflateNegotiationError> {
    let mut elements = response.iter().filter(|e| e.name == PERMESSAGE_DEFLATE);
    let Some(element) = elements.next() else {
        return Ok(None);
    };
    if elements.next().is_some() {
        return Err(DeflateNegotiationError::DuplicateExtension);
    }
    if !config.enabled {
        return Err(DeflateNegotiationError::NotOffered);
    }
    let answer = DeflateParams::from_response(element)?;
    check_response(&offer_params(config), &answer).map(Some)
}

/// Checks a valid response against the offer we sent.
fn check_response(
    offer: &DeflateParams,
    answer: &DeflateParams,
) -> Result<Agreed, DeflateNegotiationError> {
    let server_bits = match (offer.server_max_window_bits, answer.server_max_window_bits) {
        (Some(offered), Some(got)) if got > offered => {
            return Err(DeflateNegotiationError::ServerWindowTooLarge { offered, got })
        }
        (Some(offered), None) => {
            return Err(DeflateNegotiationError::ServerWindowNotAcknowledged { offered })
        }
        // §7.1.2.1: the server may announce a limit we did not ask for.
        (_, Some(got)) => got,
        (None, None) => MAX_WINDOW_BITS,
    };
    if offer.server_no_context_takeover && !answer.server_no_context_takeover {
        return Err(DeflateNegotiationError::ServerContextTakeoverNotAcknowledged);
    }
    let our_limit = match offer.client_max_window_bits {
        Some(ClientBits::Max(bits)) => bits,
        Some(ClientBits::Supported) => MAX_WINDOW_BITS,
        None if answer.client_max_window_bits.is_some() => {
            return Err(DeflateNegotiationError::UnrequestedClientMaxWindowBits)
        }
        None => MAX_WINDOW_BITS,
    };
    let client_bits = match answer.client_max_window_bits {
        Some(ClientBits::Max(bits)) => bits.min(our_limit),
        // `from_response` rejects a valueless client_max_window_bits.
        Some(ClientBits::Supported) | None => our_limit,
    };
    Ok(Agreed {
        role: Role::Client,
        outgoing: DirectionParams {
            max_window_bits: client_bits,
            // §7.1.1.2: imposed by the server, or announced by us (and then kept).
            no_context_takeover: answer.client_no_context_takeover
                || offer.client_no_context_takeover,
        },
        incoming: DirectionParams {
            max_window_bits: server_bits,
            no_context_takeover: answer.server_no_context_takeover,
        },
    })
}

impl Default for DirectionParams {
    /// A 32 KiB window with context takeover: what applies when nothing was negotiated.
    fn default() -> Self {
        DirectionParams::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::parse_extensions;

    fn enabled() -> DeflateConfig {
        DeflateConfig {
            enabled: true,
            ..DeflateConfig::default()
        }
    }

    fn offers(header: &str) -> Vec<Extension> {
        parse_extensions(header).expect("test header parses")
    }

    fn server(header: &str, config: &DeflateConfig) -> Option<(Agreed, String)> {
        negotiate_server(&offers(header), config).map(|(a, e)| (a, e.to_string()))
    }

    fn client(
        header: &str,
        config: &DeflateConfig,
    ) -> Result<Option<Agreed>, DeflateNegotiationError> {
        negotiate_client(&offers(header), config)
    }

    // ---- parameter syntax (§7.1) ----

    #[test]
    fn window_bits_values_8_to_15_without_leading_zeros() {
        for bits in 8..=15u8 {
            assert_eq!(parse_window_bits("p", &bits.to_string()), Ok(bits));
        }
        for bad in [
            "", "7", "16", "0", "08", "010", "+9", "-9", "9a", "1.5", "255", "999",
        ] {
            assert!(parse_window_bits("p", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn offer_client_max_window_bits_may_lack_value_response_may_not() {
        let e = &offers("permessage-deflate; client_max_window_bits")[0];
        assert_eq!(
            DeflateParams::from_offer(e).map(|p| p.client_max_window_bits),
            Ok(Some(ClientBits::Supported))
        );
        assert_eq!(
            DeflateParams::from_response(e),
            Err(InvalidParams::MissingValue(CLIENT_MAX_WINDOW_BITS))
        );
    }

    #[test]
    fn quoted_window_bits_are_accepted() {
        let e = &offers("permessage-deflate; server_max_window_bits=\"10\"")[0];
        assert_eq!(
            DeflateParams::from_offer(e).map(|p| p.server_max_window_bits),
            Ok(Some(10))
        );
    }

    #[test]
    fn params_round_trip_through_to_extension() {
        let p = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(ClientBits::Max(9)),
        };
        assert_eq!(DeflateParams::from_offer(&p.to_extension()), Ok(p));
    }

    #[test]
    fn each_invalid_parameter_form_is_reported_precisely() {
        let cases: [(&str, InvalidParams); 7] = [
            (
                "permessage-deflate; foo",
                InvalidParams::UnknownParameter("foo".into()),
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                InvalidParams::DuplicateParameter(SERVER_NO_CONTEXT_TAKEOVER),
            ),
            (
                "permessage-deflate; client_max_window_bits=10; client_max_window_bits",
                InvalidParams::DuplicateParameter(CLIENT_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; client_no_context_takeover=1",
                InvalidParams::UnexpectedValue(CLIENT_NO_CONTEXT_TAKEOVER),
            ),
            (
                "permessage-deflate; server_max_window_bits",
                InvalidParams::MissingValue(SERVER_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; server_max_window_bits=16",
                InvalidParams::InvalidWindowBits {
                    param: SERVER_MAX_WINDOW_BITS,
                    value: "16".into(),
                },
            ),
            (
                "permessage-deflate; client_max_window_bits=09",
                InvalidParams::InvalidWindowBits {
                    param: CLIENT_MAX_WINDOW_BITS,
                    value: "09".into(),
                },
            ),
        ];
        for (header, want) in cases {
            assert_eq!(
                DeflateParams::from_offer(&offers(header)[0]),
                Err(want),
                "{header}"
            );
        }
    }

    // ---- server (§5, §5.1, §7.1) ----

    #[test]
    fn server_disabled_accepts_nothing() {
        assert!(server("permessage-deflate", &DeflateConfig::default()).is_none());
    }

    #[test]
    fn server_accepts_plain_offer_with_plain_response() {
        let (agreed, resp) = server("permessage-deflate", &enabled()).expect("accepted");
        assert_eq!(resp, "permessage-deflate");
        assert_eq!(agreed.role, Role::Server);
        assert_eq!(agreed.outgoing, DirectionParams::default());
        assert_eq!(agreed.incoming, DirectionParams::default());
    }

    #[test]
    fn server_skips_other_extensions() {
        let (_, resp) =
            server("x-webkit-deflate-frame, permessage-deflate", &enabled()).expect("accepted");
        assert_eq!(resp, "permessage-deflate");
        assert!(server("x-foo; bar=1", &enabled()).is_none());
    }

    #[test]
    fn sec_5_1_server_declines_offer_with_unknown_parameter() {
        assert!(server("permessage-deflate; foo=1", &enabled()).is_none());
    }

    #[test]
    fn sec_5_1_server_declines_offer_with_duplicate_parameter() {
        assert!(server(
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            &enabled()
        )
        .is_none());
    }

    #[test]
    fn sec_5_1_server_declines_offer_with_invalid_value() {
        for h in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover=yes",
        ] {
            assert!(server(h, &enabled()).is_none(), "{h}");
        }
    }

    #[test]
    fn sec_5_server_accepts_first_acceptable_of_several_offers() {
        let (agreed, resp) = server(
            "permessage-deflate; server_max_window_bits=99, \
             permessage-deflate; client_max_window_bits=12, \
             permessage-deflate",
            &enabled(),
        )
        .expect("second offer accepted");
        assert_eq!(resp, "permessage-deflate; client_max_window_bits=12");
        assert_eq!(agreed.incoming.max_window_bits, 12);
    }

    #[test]
    fn sec_7_1_1_1_server_echoes_requested_server_no_context_takeover() {
        let (agreed, resp) =
            server("permessage-deflate; server_no_context_takeover", &enabled()).expect("accepted");
        assert_eq!(resp, "permessage-deflate; server_no_context_takeover");
        assert!(agreed.outgoing.no_context_takeover);
        assert!(!agreed.incoming.no_context_takeover);
    }

    #[test]
    fn sec_7_1_1_1_server_may_impose_server_no_context_takeover() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            ..enabled()
        };
        let (agreed, resp) = server("permessage-deflate", &config).expect("accepted");
        assert_eq!(resp, "permessage-deflate; server_no_context_takeover");
        assert!(agreed.outgoing.no_context_takeover);
    }

    #[test]
    fn sec_7_1_1_2_server_echoes_offered_or_imposes_client_no_context_takeover() {
        let (agreed, resp) =
            server("permessage-deflate; client_no_context_takeover", &enabled()).expect("accepted");
        assert_eq!(resp, "permessage-deflate; client_no_context_takeover");
        assert!(agreed.incoming.no_context_takeover);

        let config = DeflateConfig {
            client_no_context_takeover: true,
            ..enabled()
        };
        let (agreed, resp) = server("permessage-deflate", &config).expect("accepted");
        assert_eq!(resp, "permessage-deflate; client_no_context_takeover");
        assert!(agreed.incoming.no_context_takeover);
    }

    #[test]
    fn sec_7_1_2_1_server_grants_requested_server_window_including_8() {
        for bits in 8..=15u8 {
            let (agreed, resp) = server(
                &format!("permessage-deflate; server_max_window_bits={bits}"),
                &enabled(),
            )
            .expect("accepted");
            assert_eq!(
                resp,
                format!("permessage-deflate; server_max_window_bits={bits}")
            );
            assert_eq!(agreed.outgoing.max_window_bits, bits);
        }
    }

    #[test]
    fn sec_7_1_2_1_server_answers_with_smaller_of_request_and_policy() {
        let config = DeflateConfig {
            server_max_window_bits: 10,
            ..enabled()
        };
        let (agreed, resp) =
            server("permessage-deflate; server_max_window_bits=12", &config).expect("accepted");
        assert_eq!(resp, "permessage-deflate; server_max_window_bits=10");
        assert_eq!(agreed.outgoing.max_window_bits, 10);
        // And announces its limit even when not asked.
        let (_, resp) = server("permessage-deflate", &config).expect("accepted");
        assert_eq!(resp, "permessage-deflate; server_max_window_bits=10");
    }

    #[test]
    fn sec_7_1_2_2_response_has_no_client_max_window_bits_unless_offered() {
        let config = DeflateConfig {
            client_max_window_bits: 10,
            ..enabled()
        };
        let (agreed, resp) = server("permessage-deflate", &config).expect("accepted anyway");
        assert_eq!(resp, "permessage-deflate");
        assert_eq!(agreed.incoming.max_window_bits, 15);

        let (agreed, resp) =
            server("permessage-deflate; client_max_window_bits", &config).expect("accepted");
        assert_eq!(resp, "permessage-deflate; client_max_window_bits=10");
        assert_eq!(agreed.incoming.max_window_bits, 10);
    }

    #[test]
    fn sec_7_1_2_2_server_answers_equal_or_smaller_than_offered_client_window() {
        let config = DeflateConfig {
            client_max_window_bits: 11,
            ..enabled()
        };
        let (agreed, resp) =
            server("permessage-deflate; client_max_window_bits=9", &config).expect("accepted");
        assert_eq!(resp, "permessage-deflate; client_max_window_bits=9");
        assert_eq!(agreed.incoming.max_window_bits, 9);
        let (agreed, resp) =
            server("permessage-deflate; client_max_window_bits=13", &config).expect("accepted");
        assert_eq!(resp, "permessage-deflate; client_max_window_bits=11");
        assert_eq!(agreed.incoming.max_window_bits, 11);
        // A valueless offer with our default policy needs no answer.
        let (_, resp) =
            server("permessage-deflate; client_max_window_bits", &enabled()).expect("accepted");
        assert_eq!(resp, "permessage-deflate");
    }

    #[test]
    fn server_response_parses_as_valid_response() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 9,
            client_max_window_bits: 8,
            ..enabled()
        };
        let (agreed, resp) = negotiate_server(
            &offers("permessage-deflate; client_max_window_bits; server_max_window_bits=12"),
            &config,
        )
        .expect("accepted");
        let parsed = DeflateParams::from_response(&resp).expect("valid response");
        assert_eq!(parsed.server_max_window_bits, Some(9));
        assert_eq!(parsed.client_max_window_bits, Some(ClientBits::Max(8)));
        assert!(agreed.outgoing.no_context_takeover && agreed.incoming.no_context_takeover);
    }

    // ---- client (§5.1, §7.1) ----

    #[test]
    fn client_offer_reflects_config() {
        assert_eq!(
            client_offer(&enabled()).to_string(),
            "permessage-deflate; client_max_window_bits"
        );
        let config = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 11,
            ..enabled()
        };
        assert_eq!(
            client_offer(&config).to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=11"
        );
        // Our own offer is valid in the server's eyes.
        assert!(DeflateParams::from_offer(&client_offer(&config)).is_ok());
    }

    #[test]
    fn client_without_deflate_in_response_runs_uncompressed() {
        assert_eq!(client("", &enabled()), Ok(None));
        assert_eq!(client("x-foo", &enabled()), Ok(None));
    }

    #[test]
    fn client_accepts_plain_response() {
        let agreed = client("permessage-deflate", &enabled())
            .expect("valid")
            .expect("accepted");
        assert_eq!(agreed.role, Role::Client);
        assert_eq!(agreed.outgoing, DirectionParams::default());
        assert_eq!(agreed.incoming, DirectionParams::default());
    }

    #[test]
    fn client_applies_every_server_choice() {
        let agreed = client(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9; client_max_window_bits=8",
            &enabled(),
        )
        .expect("valid")
        .expect("accepted");
        assert_eq!(
            agreed.outgoing,
            DirectionParams {
                max_window_bits: 8,
                no_context_takeover: true
            }
        );
        assert_eq!(
            agreed.incoming,
            DirectionParams {
                max_window_bits: 9,
                no_context_takeover: true
            }
        );
    }

    #[test]
    fn sec_5_client_fails_on_two_deflate_elements() {
        assert_eq!(
            client("permessage-deflate, permessage-deflate", &enabled()),
            Err(DeflateNegotiationError::DuplicateExtension)
        );
    }

    #[test]
    fn rfc6455_9_1_client_fails_when_deflate_was_not_offered() {
        assert_eq!(
            client("permessage-deflate", &DeflateConfig::default()),
            Err(DeflateNegotiationError::NotOffered)
        );
    }

    #[test]
    fn sec_5_1_client_fails_on_unknown_parameter() {
        assert_eq!(
            client("permessage-deflate; foo", &enabled()),
            Err(InvalidParams::UnknownParameter("foo".into()).into())
        );
    }

    #[test]
    fn sec_5_1_client_fails_on_duplicate_parameter() {
        assert_eq!(
            client(
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                &enabled()
            ),
            Err(InvalidParams::DuplicateParameter(CLIENT_NO_CONTEXT_TAKEOVER).into())
        );
    }

    #[test]
    fn sec_5_1_client_fails_on_invalid_values() {
        for h in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(
                matches!(
                    client(h, &enabled()),
                    Err(DeflateNegotiationError::InvalidParams(_))
                ),
                "{h}"
            );
        }
    }

    #[test]
    fn sec_7_1_2_1_client_fails_when_server_window_exceeds_request() {
        let config = DeflateConfig {
            server_max_window_bits: 10,
            ..enabled()
        };
        assert_eq!(
            client("permessage-deflate; server_max_window_bits=11", &config),
            Err(DeflateNegotiationError::ServerWindowTooLarge {
                offered: 10,
                got: 11
            })
        );
        let agreed = client("permessage-deflate; server_max_window_bits=9", &config)
            .expect("valid")
            .expect("accepted");
        assert_eq!(agreed.incoming.max_window_bits, 9);
    }

    #[test]
    fn sec_7_1_2_1_client_fails_when_requested_server_window_is_not_acknowledged() {
        let config = DeflateConfig {
            server_max_window_bits: 10,
            ..enabled()
        };
        assert_eq!(
            client("permessage-deflate", &config),
            Err(DeflateNegotiationError::ServerWindowNotAcknowledged { offered: 10 })
        );
    }

    #[test]
    fn sec_7_1_2_1_client_accepts_unrequested_server_window() {
        let agreed = client("permessage-deflate; server_max_window_bits=12", &enabled())
            .expect("valid")
            .expect("accepted");
        assert_eq!(agreed.incoming.max_window_bits, 12);
    }

    #[test]
    fn sec_7_1_1_1_client_fails_when_server_no_context_takeover_is_not_acknowledged() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            ..enabled()
        };
        assert_eq!(
            client("permessage-deflate", &config),
            Err(DeflateNegotiationError::ServerContextTakeoverNotAcknowledged)
        );
    }

    #[test]
    fn sec_7_1_1_2_client_keeps_its_announced_client_no_context_takeover() {
        let config = DeflateConfig {
            client_no_context_takeover: true,
            ..enabled()
        };
        let agreed = client("permessage-deflate", &config)
            .expect("valid")
            .expect("accepted");
        assert!(agreed.outgoing.no_context_takeover);
    }

    #[test]
    fn sec_7_1_2_2_client_fails_on_unrequested_client_max_window_bits() {
        let offer = DeflateParams::default();
        let answer = DeflateParams {
            client_max_window_bits: Some(ClientBits::Max(10)),
            ..DeflateParams::default()
        };
        assert_eq!(
            check_response(&offer, &answer),
            Err(DeflateNegotiationError::UnrequestedClientMaxWindowBits)
        );
    }

    #[test]
    fn sec_7_1_2_2_client_keeps_its_smaller_window_if_server_answers_larger() {
        let config = DeflateConfig {
            client_max_window_bits: 10,
            ..enabled()
        };
        let agreed = client("permessage-deflate; client_max_window_bits=12", &config)
            .expect("valid")
            .expect("accepted");
        assert_eq!(agreed.outgoing.max_window_bits, 10);
        let agreed = client("permessage-deflate", &config)
            .expect("valid")
            .expect("accepted");
        assert_eq!(agreed.outgoing.max_window_bits, 10);
    }

    #[test]
    fn server_and_client_agree_on_the_same_settings() {
        let client_cfg = DeflateConfig {
            server_no_context_takeover: true,
            server_max_window_bits: 12,
            client_max_window_bits: 11,
            ..enabled()
        };
        let server_cfg = DeflateConfig {
            client_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 9,
            ..enabled()
        };
        let (s, resp) =
            negotiate_server(&[client_offer(&client_cfg)], &server_cfg).expect("accepted");
        let c = negotiate_client(&[resp], &client_cfg)
            .expect("valid")
            .expect("accepted");
        assert_eq!(s.outgoing, c.incoming);
        assert_eq!(s.incoming, c.outgoing);
        assert_eq!(s.outgoing.max_window_bits, 10);
        assert_eq!(s.incoming.max_window_bits, 9);
    }
}
