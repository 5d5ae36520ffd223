//! Servers in the cluster lab's pods and the probes clients run, through `ferrolb-lab`.

use std::{net::SocketAddr, path::Path, time::Duration};

use super::{Cluster, Place};
use crate::{
    probe::{Probe, Summary},
    wait_for, LabError,
};

impl Cluster {
    /// Starts a `--report-peer` server in pod `pod` answering with the pod's name on TCP
    /// `tcp_port` and UDP `udp_port`, on every address of both families, and waits until
    /// it listens. Returns its PID.
    pub fn start_server(
        &mut self,
        lab_tools: &Path,
        pod: &str,
        tcp_port: u16,
        udp_port: u16,
    ) -> Result<u32, LabError> {
        let place = self.pod(pod).place.clone();
        let (tcp4, tcp6) = (format!("0.0.0.0:{tcp_port}"), format!("[::]:{tcp_port}"));
        let (udp4, udp6) = (format!("0.0.0.0:{udp_port}"), format!("[::]:{udp_port}"));
        let args = [
            "serve",
            "--name",
            pod,
            "--report-peer",
            "--tcp",
            &tcp4,
            "--tcp",
            &tcp6,
            "--udp",
            &udp4,
            "--udp",
            &udp6,
        ];
        let pid = self.spawn(&place, lab_tools, &args, None)?;
        let filter = format!("sport = :{tcp_port}");
        wait_for(Duration::from_secs(5), &format!("server in {pod}"), || {
            let out = self.exec(&place, "ss", &["-Hltn", &filter]).ok()?;
            (out.lines().count() >= 2).then_some(())
        })?;
        Ok(pid)
    }

    /// `ferrolb-lab sock-probe ARGS` at `place`, its probes counted.
    fn probe(&self, place: &Place, lab_tools: &Path, args: &[&str]) -> Result<Summary, LabError> {
        let mut full = vec!["sock-probe"];
        full.extend_from_slice(args);
        let out = self.exec(place, &lab_tools.display().to_string(), &full)?;
        let probes: Vec<Probe> = serde_json::from_str(&out).map_err(|e| LabError::Command {
            command: format!("ferrolb-lab {}", full.join(" ")),
            stderr: format!("bad JSON ({e}): {out}"),
        })?;
        Ok(Summary::of(&probes))
    }

    /// `count` TCP connections from `place` to `target`, each given `timeout` to connect
    /// and to answer. With `icmp_errors` the sockets ask for ICMP errors (`sock-probe
    /// --icmp-errors`): an ICMP refusal then ends the connect as soon as it arrives, also
    /// when this kernel's balancer answers while `connect()` still holds the socket.
    pub fn connects(
        &self,
        place: &Place,
        lab_tools: &Path,
        target: SocketAddr,
        count: u32,
        timeout: Duration,
        icmp_errors: bool,
    ) -> Result<Summary, LabError> {
        let (target, count) = (target.to_string(), count.to_string());
        let timeout = timeout.as_millis().to_string();
        let mut args = vec![
            "--proto",
            "tcp",
            "--target",
            &target,
            "--count",
            &count,
            "--timeout-ms",
            &timeout,
        ];
        if icmp_errors {
            args.push("--icmp-errors");
        }
        self.probe(place, lab_tools, &args)
    }

    /// DNS-style UDP queries from `place` to `target`: `sockets` new unconnected sockets
    /// sending `per_socket` datagrams each.
    pub fn udp_queries(
        &self,
        place: &Place,
        lab_tools: &Path,
        target: SocketAddr,
        sockets: u32,
        per_socket: u32,
    ) -> Result<Summary, LabError> {
        let (target, sockets) = (target.to_string(), sockets.to_string());
        let per_socket = per_socket.to_string();
        self.probe(
            place,
            lab_tools,
            &[
                "--proto",
                "udp",
                "--target",
                &target,
                "--count",
                &sockets,
                "--datagrams",
                &per_socket,
            ],
        )
    }
}
