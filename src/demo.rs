//! `vxmesh demo`: the tour. Until the node's AF_XDP and TAP ports land, it is an in-memory tour
//! of the real switch: two container ports on one network, MAC learning, flooding, forwarding,
//! proxy ARP, a trace of one packet, and every counter. Every line it prints comes from the
//! switch's own state after it processed the frames; nothing is canned.

use std::fmt::Write;
use std::net::Ipv4Addr;

use vswitch::frames;
use vswitch::trace::{Summary, TraceFilter};
use vswitch::{Env, FdbConfig, FdbDest, Mac, MemHandle, MemPort, Network, PortRole, Switch, Time};

use crate::show;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

struct Tour {
    sw: Switch,
    ports: Vec<(&'static str, MemHandle)>,
    now: Time,
    out: String,
}

impl Tour {
    /// Send `frame` in on `port`, run one round of the switch, and describe what came out.
    fn step(&mut self, what: &str, port: &str, frame: &[u8]) {
        let _ = writeln!(
            self.out,
            "\n> {what}\n  in  {port:<4} {}",
            Summary::of(frame)
        );
        let h = &self
            .ports
            .iter()
            .find(|p| p.0 == port)
            .expect("tour port")
            .1;
        h.inject(frame);
        self.sw.poll(self.now);
        let mut any = false;
        for (name, h) in &self.ports {
            for f in h.take_tx() {
                any = true;
                let _ = writeln!(self.out, "  out {name:<4} {}", Summary::of(&f));
            }
        }
        if !any {
            let _ = writeln!(self.out, "  (nothing transmitted)");
        }
    }
}

/// Run the in-memory tour and return its transcript.
pub fn memory_tour() -> String {
    let c11 = Mac::docker_default(ip(11));
    let c12 = Mac::docker_default(ip(12));
    let c21 = Mac::docker_default(ip(21));
    let mut env = Env::new(FdbConfig::default());
    let mut net = Network::new("appnet", 4097, 1450);
    net.arp.insert(ip(11), c11);
    net.arp.insert(ip(12), c12);
    net.arp.insert(ip(21), c21);
    let appnet = env.add_network(net);
    let n2 = env.add_vtep(Ipv4Addr::new(198, 18, 0, 2), "n2");
    env.fdb
        .add_static(appnet, c21, FdbDest::Remote(n2))
        .expect("static entry");
    let (mut sw, l2) = Switch::with_l2(env);
    let mut ports = Vec::new();
    for name in ["c11", "c12"] {
        let (p, h) = MemPort::new();
        sw.add_port(
            name,
            Box::new(p),
            PortRole::Local(appnet),
            l2.local_path(&[]),
        );
        ports.push((name, h));
    }
    let mut t = Tour {
        sw,
        ports,
        now: Time::from_secs(1),
        out: String::new(),
    };
    let _ = writeln!(
        t.out,
        "vxmesh demo: an in-memory tour of the switch (network appnet, VNI 4097, MTU 1450; \
         containers c11 and c12 on local ports; c21 is a remote endpoint on node n2, 198.18.0.2)"
    );

    let req = frames::arp_request(c11, ip(11), ip(12));
    t.step(
        "c11 asks who-has 10.0.9.12: the switch answers (proxy ARP), nothing is flooded",
        "c11",
        &req,
    );
    let req = frames::arp_request(c11, ip(11), ip(21));
    t.step(
        "c11 asks for the remote endpoint 10.0.9.21: answered locally too",
        "c11",
        &req,
    );
    let req = frames::arp_request(c11, ip(11), ip(99));
    t.step(
        "c11 asks for an unknown address: flooded to the network's other ports",
        "c11",
        &req,
    );
    let f = frames::udp(c11, c12, ip(11), ip(12), 40000, 7, b"hello");
    t.step(
        "c11 sends to c12, whose MAC is not learned yet: unknown unicast, flooded",
        "c11",
        &f,
    );
    let f = frames::udp(c12, c11, ip(12), ip(11), 7, 40000, b"hello");
    t.step(
        "c12 answers: c11 was learned on port c11, so it is forwarded there only",
        "c12",
        &f,
    );
    t.sw.env
        .tracer
        .arm(1, TraceFilter::parse("udp port 7").expect("filter"));
    let f = frames::udp(c11, c12, ip(11), ip(12), 40000, 7, b"again");
    t.step(
        "c11 sends to c12 again, traced: both MACs are known now",
        "c11",
        &f,
    );
    let mut runt = frames::udp(c11, c12, ip(11), ip(12), 1, 2, b"");
    runt.truncate(10);
    t.step(
        "a 10-byte runt frame: dropped and counted by name",
        "c11",
        &runt,
    );

    let _ = writeln!(
        t.out,
        "\n$ vxmesh fdb show\n{}",
        show::fdb(&t.sw, None).trim_end()
    );
    let recs = t.sw.env.tracer.drain();
    let _ = writeln!(
        t.out,
        "\n$ vxmesh trace --count 1 --filter 'udp port 7'\n{}",
        show::trace(&t.sw, &recs).trim_end()
    );
    let _ = writeln!(t.out, "\n$ vxmesh stats\n{}", show::stats(&t.sw).trim_end());
    let _ = writeln!(
        t.out,
        "\nThe namespace lab (containers on AF_XDP and TAP ports, VXLAN between two nodes, the \
         load balancer, nginx backends) comes with the node's ports; this build runs the switch \
         in memory only."
    );
    t.out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tour_shows_what_the_switch_did() {
        let t = super::memory_tour();
        // proxy ARP answered on the asking port, for a local and a remote endpoint
        assert!(
            t.contains(
                "out c11  02:42:0a:00:09:0c > 02:42:0a:00:09:0b arp 10.0.9.12 asks/tells 10.0.9.11"
            ),
            "{t}"
        );
        assert!(
            t.contains("out c11  02:42:0a:00:09:15 > 02:42:0a:00:09:0b arp 10.0.9.21"),
            "{t}"
        );
        assert!(
            t.contains("02:42:0a:00:09:0b port c11 network appnet vni 4097 learned"),
            "{t}"
        );
        assert!(
            t.contains("02:42:0a:00:09:15 dst 198.18.0.2 (n2) network appnet vni 4097 static"),
            "{t}"
        );
        assert!(t.contains("drop_runt 1"), "{t}");
        assert!(t.contains("l2-fwd       output c12"), "{t}");
    }
}
