//! One rtnetlink round trip: a request goes out, answers are read until the kernel says it
//! has finished (NLMSG_DONE after a dump, the NLMSG_ERROR acknowledgement after anything
//! else). Messages are built and parsed by `netlink-packet-route`; this file only frames
//! them and tells the end of an answer from a refusal.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::HostError;

/// Netlink messages start on 4-byte boundaries within a datagram.
const ALIGN: usize = 4;

/// What a request asks of the kernel, which decides how its answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Every object of a kind; the answer ends with NLMSG_DONE.
    Dump,
    /// One object or one change; the answer ends with an acknowledgement. Extra flags
    /// (such as NLM_F_CREATE) ride along.
    Acknowledged(u16),
}

impl Kind {
    fn flags(self) -> u16 {
        NLM_F_REQUEST
            | match self {
                Kind::Dump => NLM_F_DUMP,
                Kind::Acknowledged(extra) => NLM_F_ACK | extra,
            }
    }
}

/// A connected NETLINK_ROUTE socket; one request at a time.
pub(super) struct RouteSocket {
    socket: Socket,
    sequence: u32,
}

impl RouteSocket {
    pub(super) fn open() -> Result<Self, HostError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(HostError::Netlink)?;
        socket.bind_auto().map_err(HostError::Netlink)?;
        // Port 0 is the kernel.
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(HostError::Netlink)?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Sends `request` (named `name` in errors) and returns the messages of its answer.
    pub(super) fn request(
        &mut self,
        name: &'static str,
        request: RouteNetlinkMessage,
        kind: Kind,
    ) -> Result<Vec<RouteNetlinkMessage>, HostError> {
        self.sequence = self.sequence.wrapping_add(1);
        let bytes = encode(request, kind, self.sequence);
        self.socket.send(&bytes, 0).map_err(HostError::Netlink)?;
        let mut answer = Answer::new(name, self.sequence);
        while !answer.finished {
            let (datagram, _) = self.socket.recv_from_full().map_err(HostError::Netlink)?;
            answer.absorb(&datagram)?;
        }
        Ok(answer.messages)
    }
}

/// The bytes of `request` framed as one netlink message.
pub(super) fn encode(request: RouteNetlinkMessage, kind: Kind, sequence: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = kind.flags();
    header.sequence_number = sequence;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// The answer to one request, filled datagram by datagram.
struct Answer {
    name: &'static str,
    sequence: u32,
    messages: Vec<RouteNetlinkMessage>,
    finished: bool,
}

impl Answer {
    fn new(name: &'static str, sequence: u32) -> Self {
        Self {
            name,
            sequence,
            messages: Vec::new(),
            finished: false,
        }
    }

    fn absorb(&mut self, datagram: &[u8]) -> Result<(), HostError> {
        let mut rest = datagram;
        while !rest.is_empty() && !self.finished {
            let message =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest).map_err(|e| {
                    HostError::Decode {
                        request: self.name,
                        reason: e.to_string(),
                    }
                })?;
            let length = (message.header.length as usize).next_multiple_of(ALIGN);
            rest = rest.get(length..).unwrap_or_default();
            // A reused socket may still hold the tail of an earlier answer that failed.
            if message.header.sequence_number != self.sequence {
                continue;
            }
            self.take(message.payload)?;
        }
        Ok(())
    }

    fn take(&mut self, payload: NetlinkPayload<RouteNetlinkMessage>) -> Result<(), HostError> {
        match payload {
            NetlinkPayload::InnerMessage(message) => self.messages.push(message),
            NetlinkPayload::Done(done) if done.code < 0 => {
                return Err(self.refused(io::Error::from_raw_os_error(-done.code)))
            }
            NetlinkPayload::Done(_) => self.finished = true,
            NetlinkPayload::Error(error) if error.code.is_some() => {
                return Err(self.refused(error.to_io()))
            }
            NetlinkPayload::Error(_) => self.finished = true,
            NetlinkPayload::Overrun(_) => {
                return Err(HostError::Netlink(io::Error::other(format!(
                    "answer to {} overran the socket buffer",
                    self.name
                ))))
            }
            _ => {}
        }
        Ok(())
    }

    fn refused(&self, source: io::Error) -> HostError {
        HostError::Kernel {
            request: self.name,
            source,
        }
    }
}

/// A datagram as the kernel would send it: `payloads` in order, all answering `sequence`.
#[cfg(test)]
pub(super) fn kernel_datagram(
    payloads: Vec<NetlinkPayload<RouteNetlinkMessage>>,
    sequence: u32,
) -> Vec<u8> {
    let mut datagram = Vec::new();
    for payload in payloads {
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut bytes = vec![0; message.buffer_len().next_multiple_of(ALIGN)];
        message.serialize(&mut bytes);
        datagram.extend_from_slice(&bytes);
    }
    datagram
}

/// Runs `datagrams` through the answer logic of a request with sequence 1.
#[cfg(test)]
pub(super) fn read_answer(datagrams: &[Vec<u8>]) -> Result<Vec<RouteNetlinkMessage>, HostError> {
    let mut answer = Answer::new("test request", 1);
    for datagram in datagrams {
        answer.absorb(datagram)?;
    }
    assert!(answer.finished, "the answer never ended");
    Ok(answer.messages)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use netlink_packet_route::link::LinkMessage;

    use super::*;

    fn link(index: u32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(message))
    }

    fn done() -> NetlinkPayload<RouteNetlinkMessage> {
        NetlinkPayload::Done(DoneMessage::default())
    }

    fn error(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut message = ErrorMessage::default();
        message.code = std::num::NonZeroI32::new(code);
        NetlinkPayload::Error(message)
    }

    fn indexes(messages: &[RouteNetlinkMessage]) -> Vec<u32> {
        messages
            .iter()
            .map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => link.header.index,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn requests_carry_the_flags_of_their_kind() {
        let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
        let dump = encode(request.clone(), Kind::Dump, 7);
        let header = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&dump)
            .unwrap()
            .header;
        assert_eq!(header.flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(header.sequence_number, 7);
        assert_eq!(header.length as usize, dump.len());
        let acked = encode(request, Kind::Acknowledged(0x400), 8);
        let header = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&acked)
            .unwrap()
            .header;
        assert_eq!(header.flags, NLM_F_REQUEST | NLM_F_ACK | 0x400);
    }

    #[test]
    fn a_dump_spans_datagrams_and_ends_at_done() {
        let first = kernel_datagram(vec![link(1), link(2)], 1);
        let second = kernel_datagram(vec![link(3), done()], 1);
        assert_eq!(indexes(&read_answer(&[first, second]).unwrap()), [1, 2, 3]);
    }

    #[test]
    fn an_acknowledged_request_ends_at_the_ack_and_skips_stale_answers() {
        let stale = kernel_datagram(vec![link(9), error(-libc::EEXIST)], 0);
        let answer = kernel_datagram(vec![link(4), error(0)], 1);
        assert_eq!(indexes(&read_answer(&[stale, answer]).unwrap()), [4]);
    }

    #[test]
    fn a_refusal_carries_the_kernel_errno() {
        let refused = kernel_datagram(vec![error(-libc::ENODEV)], 1);
        match read_answer(&[refused]) {
            Err(HostError::Kernel { request, source }) => {
                assert_eq!(request, "test request");
                assert_eq!(source.raw_os_error(), Some(libc::ENODEV));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
