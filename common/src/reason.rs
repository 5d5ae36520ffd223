//! Why a packet got its verdict. Each enum value is also the index of its per-CPU counter.

/// Defines a reason enum whose values are dense counter indices, with its list of all
/// reasons and each reason's metric label.
macro_rules! reasons {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $value:literal => $label:literal,)+
    }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$(Self::$variant,)+];
            pub const COUNT: u32 = Self::ALL.len() as u32;

            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }
        }

        // Counter indices must be 0..COUNT without gaps.
        const _: () = {
            let mut i = 0;
            while i < $name::ALL.len() {
                assert!($name::ALL[i] as usize == i);
                i += 1;
            }
        };
    };
}

reasons! {
    /// Outcomes of the XDP balancer.
    pub enum XdpReason {
        /// Encapsulated and sent back out of the receiving interface (XDP_TX).
        Forwarded = 0 => "forwarded",
        /// Encapsulated and redirected to another interface.
        ForwardedRedirect = 1 => "forwarded_redirect",
        /// Neither IPv4 nor IPv6 over Ethernet.
        PassNotIp = 2 => "pass_not_ip",
        /// IPv4 TCP/UDP whose (destination, port, protocol) is no service.
        PassNotService = 3 => "pass_not_service",
        /// A fragment that is not the first of its datagram, whose first fragment this
        /// node did not balance (not seen yet, or forgotten): without ports it cannot be
        /// mapped to a flow. First fragments are balanced like whole packets, and the
        /// fragments following them go to the same backend (xdp/src/fragment.rs).
        PassFragment = 4 => "pass_fragment",
        /// Neither TCP nor UDP (for IPv6: as the first next header; extension headers
        /// other than fragments are passed here too).
        PassOtherProtocol = 5 => "pass_other_protocol",
        /// The datapath has no configuration yet, or no encapsulation source of the
        /// packet's family.
        PassNotReady = 6 => "pass_not_ready",
        /// Ethernet or IPv4 header shorter than it claims, or an IHL below 5.
        DropMalformedIp = 7 => "drop_malformed_ip",
        /// TCP or UDP header cut short.
        DropMalformedL4 = 8 => "drop_malformed_l4",
        /// The service exists but has no backend with weight above zero.
        DropNoBackend = 9 => "drop_no_backend",
        /// A table slot names a backend id with no live entry (a daemon bug or a race).
        DropBackendMissing = 10 => "drop_backend_missing",
        /// The kernel has no route to the backend.
        DropNoRoute = 11 => "drop_no_route",
        /// The route is known but the next hop's MAC is not resolved yet; the daemon is asked.
        DropNoNeighbour = 12 => "drop_no_neighbour",
        /// The encapsulated packet would exceed the egress MTU.
        DropTooBig = 13 => "drop_too_big",
        /// Growing the packet head failed.
        DropEncapFailed = 14 => "drop_encap_failed",
        /// Encapsulated for a backend on this host and handed to its own stack.
        ForwardedLocal = 15 => "forwarded_local",
        /// Refused: answered with ICMP/ICMPv6 port unreachable (a rejecting frontend
        /// without backends, or a port no frontend of a rejecting address names).
        RejectedIcmp = 16 => "rejected_icmp",
        /// A reject or "too big" answer suppressed by the ICMP rate limit; dropped.
        DropIcmpRateLimited = 17 => "drop_icmp_rate_limited",
        /// Too big after encapsulation: answered with ICMP "fragmentation needed" or
        /// ICMPv6 "packet too big" carrying the MTU that fits.
        TooBigAnswered = 18 => "too_big_answered",
        /// An ICMP error quoting a VIP flow, forwarded to the backend that owns the flow.
        ForwardedIcmpError = 19 => "forwarded_icmp_error",
        /// The source is outside the service's `loadBalancerSourceRanges`.
        DropSourceRange = 20 => "drop_source_range",
        /// An 802.1Q/802.1ad-tagged frame whose VLAN is not one the datapath balances
        /// (by default none: only untagged frames are); passed untouched.
        PassVlan = 21 => "pass_vlan",
    }
}

reasons! {
    /// Flow-table events of the XDP balancer, counted per CPU in `LB_FLOW_STATS`. The
    /// daemon derives evictions per table as entries recorded − entries live − entries the
    /// daemon purged (`inspect::flow_tables`).
    pub enum FlowEvent {
        /// A new TCP flow-table entry was written (a key the table did not hold).
        TcpRecorded = 0 => "tcp_recorded",
        /// A new UDP flow-table entry was written.
        UdpRecorded = 1 => "udp_recorded",
        /// An entry whose backend is gone or was replaced was rewritten in place.
        Replaced = 2 => "replaced",
        /// A new flow forwarded by Maglev without an entry: this CPU's new-flow insert
        /// budget was spent (a flood of new flows). Its next packet tries again.
        OverBudget = 3 => "over_budget",
        /// The flow's table could not be written (not sized yet); the flow goes unrecorded.
        RecordFailed = 4 => "record_failed",
        /// The flow cache served a flow whose table entry was gone (evicted while the
        /// flow was active) and wrote it again; also counted as recorded.
        Relearned = 5 => "relearned",
        /// TCP entries the daemon deleted (written by the daemon only, on CPU 0).
        TcpPurged = 6 => "tcp_purged",
        /// UDP entries the daemon deleted (written by the daemon only, on CPU 0).
        UdpPurged = 7 => "udp_purged",
    }
}

reasons! {
    /// Outcomes of the backend-side TC decapsulation program.
    pub enum TcReason {
        /// Outer IPIP header removed; the inner packet goes up the stack to the local VIP.
        Decapsulated = 0 => "decapsulated",
        /// Neither IPv4-in-IPv4 nor IPv6-in-IPv6; left alone.
        PassNotIpip = 1 => "pass_not_ipip",
        /// IPIP, but the inner destination is not a VIP served here; left alone.
        PassNotLocalVip = 2 => "pass_not_local_vip",
        /// IPIP with a truncated or invalid header.
        DropMalformed = 3 => "drop_malformed",
        /// The kernel refused to shrink the packet.
        DropDecapFailed = 4 => "drop_decap_failed",
        /// Outer header removed and the inner destination translated to the local endpoint
        /// (address and target port); the flow is remembered for its replies.
        DecapsulatedTranslated = 5 => "decapsulated_translated",
        /// Egress: a reply of a translated flow left with the frontend restored as source.
        ReplyRestored = 6 => "reply_restored",
        /// Egress: not a reply of a translated flow; left alone.
        PassNotTranslated = 7 => "pass_not_translated",
        /// A checksum or header rewrite failed; the packet is dropped rather than sent wrong.
        DropRewriteFailed = 8 => "drop_rewrite_failed",
    }
}

reasons! {
    /// Outcomes of the socket (cgroup sock_addr) programs.
    pub enum SockReason {
        /// connect/sendmsg to a frontend: the peer became the chosen endpoint.
        Selected = 0 => "selected",
        /// recvmsg/getpeername: the endpoint's address was reported as the frontend.
        Restored = 1 => "restored",
        /// The address is no socket-balanced frontend; left alone.
        PassNotService = 2 => "pass_not_service",
        /// The frontend has no endpoint and refuses, or the address refuses ports it has no
        /// frontend for (ECONNREFUSED).
        RejectNoBackend = 3 => "reject_no_backend",
        /// The frontend has no endpoint usable from here and drops (the call fails).
        DropNoBackend = 4 => "drop_no_backend",
        /// A table slot names a backend id with no live entry.
        DropBackendMissing = 5 => "drop_backend_missing",
        /// recvmsg/getpeername from an address no rewrite produced; left alone.
        PassNotRewritten = 6 => "pass_not_rewritten",
    }
}
