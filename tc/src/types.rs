//! Values the backend-side program keeps between its steps, on their own so the maps that
//! hold them and the code that fills them do not import each other.

use lb_common::Addr;

use crate::l4::Ports;

/// A decapsulated packet's translation, found before the outer header is removed. It
/// lives in a per-CPU scratch slot (`nat::scratch`): the IPv6 path's stack frames have no
/// room for it.
pub struct Translation {
    pub inner: Ports,
    pub endpoint: Addr,
    pub target_port_be: u16,
}
