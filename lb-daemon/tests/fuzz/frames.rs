//! Random and mutated frames for the differential fuzzer, from a seeded generator: valid
//! flows to the services and beside them, then truncations, bogus lengths, IP options,
//! VLAN tags, fragments, ICMP errors, IPv6 extension headers and every TCP flag byte.

/// xorshift64*: small, fast, and the same sequence for the same seed everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const VIP: [u8; 4] = [198, 18, 100, 1];
pub const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
/// Addresses whose undefined ports the harness makes refuse (the IPv6 one is VIP6 with
/// this last byte).
pub const REJECTING: [u8; 4] = [198, 18, 100, 3];
pub const REJECTING6_LAST: u8 = 3;
const ETH_HLEN: usize = 14;
const PORTS: &[u16] = &[80, 53, 81, 443, 8080, 0, 65535];
const PROTOS: &[u8] = &[6, 17, 6, 17, 1, 58, 47, 4, 132];
/// VLAN ids: 0 (priority tag), one the harness lists, others.
const VIDS: &[u16] = &[0, 20, 10, 4095, 1];

/// One frame: a base packet of a random kind, then zero or more mutations.
pub fn frame(rng: &mut Rng) -> Vec<u8> {
    let mut f = if rng.chance(55) { ipv4(rng) } else { ipv6(rng) };
    if rng.chance(3) {
        f[12..14].copy_from_slice(&rng.pick(&[0x0806u16, 0x88cc, 0x0000]).to_be_bytes());
    }
    if rng.chance(20) {
        let tpid: u16 = if rng.chance(80) { 0x8100 } else { 0x88a8 };
        let tci = (rng.below(8) as u16) << 13 | rng.pick(VIDS);
        let mut tag = tpid.to_be_bytes().to_vec();
        tag.extend_from_slice(&tci.to_be_bytes());
        if rng.chance(10) {
            tag.extend_from_slice(&[0x81, 0x00, 0x00, 0x14]);
        }
        f.splice(12..12, tag);
    }
    mutate(rng, &mut f);
    f
}

fn eth(ether_type: u16) -> Vec<u8> {
    let mut f = LB_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// A transport header (TCP with any flag byte, UDP, or bytes of another protocol) and a
/// payload; for protocols 1 and 58 an ICMP message, mostly an error quoting a packet the
/// frame's destination `dst` sent to a client (a VIP flow's answer), sometimes another
/// type, a quote from elsewhere, of another protocol, or with a bogus header length.
fn transport(rng: &mut Rng, proto: u8, sport: u16, dport: u16, dst: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    match proto {
        6 => {
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&dport.to_be_bytes());
            t.extend_from_slice(&rng.next().to_be_bytes());
            t.push(0x50);
            t.push(rng.below(256) as u8);
            t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        }
        17 => {
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&dport.to_be_bytes());
            t.extend_from_slice(&[0, 0, 0, 0]);
        }
        1 | 58 => icmp_error(rng, proto, sport, dport, dst, &mut t),
        _ => {}
    }
    let len = match rng.below(10) {
        0 => 1400 + rng.below(200) as usize,
        1..=3 => rng.below(64) as usize,
        _ => 0,
    };
    t.extend(std::iter::repeat_n(0xab, len));
    t
}

fn icmp_error(rng: &mut Rng, proto: u8, sport: u16, dport: u16, dst: &[u8], t: &mut Vec<u8>) {
    let kinds: &[u8] = if proto == 1 {
        &[3, 3, 11, 0, 8, 5]
    } else {
        &[1, 2, 3, 1, 128, 135]
    };
    t.extend_from_slice(&[rng.pick(kinds), rng.below(5) as u8, 0, 0, 0, 0, 5, 0xdc]);
    let quoted_proto = rng.pick(&[6u8, 17, 6, 17, 1]);
    let client = 10 + rng.below(3) as u8;
    let mut from = dst.to_vec();
    if rng.chance(10) {
        from[3] ^= 1; // not sent by the error's destination
    }
    if dst.len() == 4 {
        let hlen = if rng.chance(10) {
            rng.pick(&[0x44u8, 0x46, 0x4f, 0x65])
        } else {
            0x45
        };
        t.extend_from_slice(&[hlen, 0, 0, 40, 0, 0, 0x40, 0, 64, quoted_proto, 0, 0]);
        t.extend_from_slice(&from);
        t.extend_from_slice(&[198, 18, 0, client]);
        for _ in 20..usize::from(hlen & 0x0f) * 4 {
            t.push(1);
        }
    } else {
        t.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, quoted_proto, 64]);
        t.extend_from_slice(&from);
        let mut to = VIP6;
        to[6] = 0;
        to[15] = client;
        t.extend_from_slice(&to);
    }
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1]);
}

fn ports(rng: &mut Rng) -> (u16, u16) {
    (1024 + rng.below(64) as u16, rng.pick(PORTS))
}

fn ipv4(rng: &mut Rng) -> Vec<u8> {
    let proto = rng.pick(PROTOS);
    let (sport, dport) = ports(rng);
    let options = if rng.chance(10) {
        4 * rng.below(11) as usize
    } else {
        0
    };
    let dst = match rng.below(10) {
        0 => [198, 18, 100, 2],
        1 => REJECTING,
        _ => VIP,
    };
    let mut body = transport(rng, proto, sport, dport, &dst);
    // Fragments: a few identifications, so later fragments meet first ones.
    let frag: u16 = match rng.below(10) {
        0 => 0x2000,
        1 => 0x2000 | (1 + rng.below(200) as u16),
        2 => 1 + rng.below(200) as u16,
        _ => {
            if rng.chance(50) {
                0x4000
            } else {
                0
            }
        }
    };
    if frag & 0x1fff != 0 && rng.chance(50) {
        body.truncate(rng.below(body.len() as u64 + 1) as usize);
    }
    let hlen = 20 + options;
    let mut ip = vec![0u8; hlen];
    ip[0] = 0x40 | (hlen / 4) as u8;
    ip[1] = rng.below(256) as u8;
    ip[2..4].copy_from_slice(&((hlen + body.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(rng.below(8) as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&[198, 18, 0, 10 + rng.below(3) as u8]);
    ip[16..20].copy_from_slice(&dst);
    for byte in &mut ip[20..] {
        *byte = 1; // NOP options
    }
    let mut f = eth(0x0800);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&body);
    f
}

fn ipv6(rng: &mut Rng) -> Vec<u8> {
    let (sport, dport) = ports(rng);
    let proto = rng.pick(PROTOS);
    let mut dst = VIP6;
    dst[15] = rng.pick(&[1, 1, 1, 1, 1, 1, 1, 1, 2, REJECTING6_LAST]);
    let mut payload = Vec::new();
    let mut next = proto;
    // Extension headers: a fragment header (first, later, atomic) or another one.
    match rng.below(10) {
        0..=2 => {
            let offset_m: u16 = match rng.below(4) {
                0 => 1,
                1 => (1 + rng.below(100) as u16) << 3 | 1,
                2 => (1 + rng.below(100) as u16) << 3,
                _ => 0,
            };
            payload.push(proto);
            payload.push(0);
            payload.extend_from_slice(&offset_m.to_be_bytes());
            payload.extend_from_slice(&(rng.below(8) as u32).to_be_bytes());
            next = 44;
        }
        3 => {
            payload.extend_from_slice(&[proto, 0, 0, 0, 0, 0, 0, 0]);
            next = rng.pick(&[0u8, 43, 60, 51]);
        }
        _ => {}
    }
    payload.extend(transport(rng, proto, sport, dport, &dst));
    let mut f = eth(0x86dd);
    let vtc: u32 = 6 << 28 | (rng.below(1 << 28) as u32);
    f.extend_from_slice(&vtc.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.push(next);
    f.push(64);
    let mut src = VIP6;
    src[6] = 0;
    src[15] = 10 + rng.below(3) as u8;
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&payload);
    f
}

/// Truncations, bogus lengths, flipped bytes, trailing bytes.
fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    if rng.chance(8) {
        // Never below an Ethernet header: BPF_PROG_RUN refuses such frames (EINVAL), and
        // no driver hands them to XDP.
        let len = ETH_HLEN + rng.below((f.len() - ETH_HLEN) as u64 + 1) as usize;
        f.truncate(len);
    }
    if rng.chance(6) && f.len() > 20 {
        // A length field: IPv4 total length (16) or IPv6 payload length (18), with or
        // without a tag before them.
        let at = rng.pick(&[16usize, 18, 20, 22]);
        if at + 2 <= f.len() {
            let value = rng
                .pick(&[0u16, 1, 7, 19, 20, 28, 40, 0xffff])
                .wrapping_add(rng.below(3) as u16);
            f[at..at + 2].copy_from_slice(&value.to_be_bytes());
        }
    }
    if rng.chance(6) && !f.is_empty() {
        let at = rng.below(f.len().min(80) as u64) as usize;
        f[at] = rng.below(256) as u8;
    }
    if rng.chance(5) {
        f.extend(std::iter::repeat_n(0, rng.below(8) as usize));
    }
}
