//! Why a packet got its verdict. Each enum value is also the index of its per-CPU counter.

/// Outcomes of the XDP balancer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpReason {
    /// Encapsulated and sent back out of the receiving interface (XDP_TX).
    Forwarded = 0,
    /// Encapsulated and redirected to another interface.
    ForwardedRedirect = 1,
    /// Not Ethernet + IPv4.
    PassNotIpv4 = 2,
    /// IPv4 TCP/UDP whose (destination, port, protocol) is no service.
    PassNotService = 3,
    /// IPv4 fragment: without ports it cannot be mapped to a flow consistently.
    PassFragment = 4,
    /// IPv4 but neither TCP nor UDP.
    PassOtherProtocol = 5,
    /// The datapath has no configuration yet (no encapsulation source).
    PassNotReady = 6,
    /// Ethernet or IPv4 header shorter than it claims, or an IHL below 5.
    DropMalformedIp = 7,
    /// TCP or UDP header cut short.
    DropMalformedL4 = 8,
    /// The service exists but has no backend with weight above zero.
    DropNoBackend = 9,
    /// A table slot names a backend id with no live entry (a daemon bug or a race).
    DropBackendMissing = 10,
    /// The kernel has no route to the backend.
    DropNoRoute = 11,
    /// The route is known but the next hop's MAC is not resolved yet; the daemon is asked.
    DropNoNeighbour = 12,
    /// The encapsulated packet would exceed the egress MTU.
    DropTooBig = 13,
    /// Growing the packet head failed.
    DropEncapFailed = 14,
}

impl XdpReason {
    pub const COUNT: u32 = 15;
    pub const ALL: [XdpReason; Self::COUNT as usize] = [
        Self::Forwarded,
        Self::ForwardedRedirect,
        Self::PassNotIpv4,
        Self::PassNotService,
        Self::PassFragment,
        Self::PassOtherProtocol,
        Self::PassNotReady,
        Self::DropMalformedIp,
        Self::DropMalformedL4,
        Self::DropNoBackend,
        Self::DropBackendMissing,
        Self::DropNoRoute,
        Self::DropNoNeighbour,
        Self::DropTooBig,
        Self::DropEncapFailed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::ForwardedRedirect => "forwarded_redirect",
            Self::PassNotIpv4 => "pass_not_ipv4",
            Self::PassNotService => "pass_not_service",
            Self::PassFragment => "pass_fragment",
            Self::PassOtherProtocol => "pass_other_protocol",
            Self::PassNotReady => "pass_not_ready",
            Self::DropMalformedIp => "drop_malformed_ip",
            Self::DropMalformedL4 => "drop_malformed_l4",
            Self::DropNoBackend => "drop_no_backend",
            Self::DropBackendMissing => "drop_backend_missing",
            Self::DropNoRoute => "drop_no_route",
            Self::DropNoNeighbour => "drop_no_neighbour",
            Self::DropTooBig => "drop_too_big",
            Self::DropEncapFailed => "drop_encap_failed",
        }
    }
}

/// Outcomes of the backend-side TC decapsulation program.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcReason {
    /// Outer IPIP header removed; the inner packet goes up the stack to the local VIP.
    Decapsulated = 0,
    /// Not IPv4-in-IPv4; left alone.
    PassNotIpip = 1,
    /// IPIP, but the inner destination is not a VIP served here; left alone.
    PassNotLocalVip = 2,
    /// IPIP with a truncated or invalid header.
    DropMalformed = 3,
    /// The kernel refused to shrink the packet.
    DropDecapFailed = 4,
}

impl TcReason {
    pub const COUNT: u32 = 5;
    pub const ALL: [TcReason; Self::COUNT as usize] = [
        Self::Decapsulated,
        Self::PassNotIpip,
        Self::PassNotLocalVip,
        Self::DropMalformed,
        Self::DropDecapFailed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Decapsulated => "decapsulated",
            Self::PassNotIpip => "pass_not_ipip",
            Self::PassNotLocalVip => "pass_not_local_vip",
            Self::DropMalformed => "drop_malformed",
            Self::DropDecapFailed => "drop_decap_failed",
        }
    }
}
