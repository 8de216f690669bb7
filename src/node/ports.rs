//! How a node opens its ports: the [`PortOpener`] a change calls for each port of the plan and
//! for the underlay, with [`SystemPorts`] (AF_XDP on veths, TAPs in the containers' namespaces,
//! the UDP socket on 4789) and [`MemPorts`] (in-memory ports, for tests and benches). The ports
//! themselves are the packet path's ends (`vswitch::port`); opening them is control plane, off
//! the poll thread: an AF_XDP socket or a TAP takes milliseconds.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Context;
use vswitch::{Mac, Port};

use super::{PortKind, PortPlan};
use crate::config::Attach;

/// Opens the kernel-backed ports; tests substitute in-memory ones. Called off the packet
/// thread: opening an AF_XDP socket or creating a TAP takes milliseconds.
pub trait PortOpener {
    /// Open the port of `plan`. `offloads`: whether a TAP may hand over 64 KB super-frames
    /// (the switch's buffers hold them).
    fn open(&mut self, plan: &PortPlan, offloads: bool) -> anyhow::Result<Box<dyn Port>>;
    /// Whether AF_XDP endpoints in named namespaces keep their containers' TCP offloads and
    /// hand over super-frames (`vxmesh run --afxdp-offloads`); the node then sizes its
    /// buffers for them.
    fn afxdp_offloads(&self) -> bool {
        false
    }
    /// Open the UDP underlay at `vtep`.
    fn underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>>;
    /// Open one of several UDP underlay sockets at `vtep`, one per worker of a node on more
    /// than one poll thread (`SO_REUSEPORT` for a real socket).
    fn shared_underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        self.underlay(vtep)
    }
    /// Open the encrypted underlay (ESP) at `vtep`; an opener without one says why.
    fn esp_underlay(&mut self, _vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        anyhow::bail!("this port opener has no ESP underlay")
    }
    /// Open the encrypted underlay of ESP in UDP (port 4500) at `vtep`.
    fn esp_udp_underlay(&mut self, _vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        anyhow::bail!("this port opener has no ESP-in-UDP underlay")
    }
}

/// In-memory ports for every port of a plan, their other ends dropped: a node that needs no
/// root and touches no interface (tests and benches of the node's tables and control paths).
pub struct MemPorts;

impl PortOpener for MemPorts {
    fn open(&mut self, _: &PortPlan, _: bool) -> anyhow::Result<Box<dyn Port>> {
        Ok(Box::new(vswitch::MemPort::new().0))
    }
    fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(Box::new(vswitch::MemPort::new().0))
    }
    fn esp_underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(Box::new(vswitch::MemPort::new().0))
    }
    fn esp_udp_underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(Box::new(vswitch::MemPort::new().0))
    }
}

/// How many source ports the underlay sends VXLAN from by default (`vxmesh run
/// --vxlan-source-ports`): each inner flow leaves from the one its hash picks, as from the
/// kernel's vxlan device, so that the underlay's routers and the peers' receive queues spread
/// the flows.
pub const VXLAN_SOURCE_PORTS: usize = 16;

/// The real ports: AF_XDP on veths, TAPs in the containers' namespaces, a UDP socket on 4789.
#[derive(Clone, Copy, Debug)]
pub struct SystemPorts {
    /// `vxmesh run --afxdp-offloads`: an AF_XDP endpoint in a named namespace keeps its
    /// container's TCP/IPv4 offloads and its port receives super-frames beside the ring;
    /// without it the node turns the container's TX checksum, TSO and GSO off (raw frames).
    pub afxdp_offloads: bool,
    /// `vxmesh run --afxdp-napi-defer-us`: AF_XDP ports defer their veth's receive by this
    /// long ([`vswitch::port::afxdp::AfxdpConfig::napi_defer`]; zero: not); not ports taking
    /// super-frames, which run generic XDP.
    pub afxdp_napi_defer: std::time::Duration,
    /// `vxmesh run --vxlan-source-ports`: the underlay sends each inner flow from one of this
    /// many source ports, by its hash (0: every datagram from 4789).
    pub vxlan_source_ports: usize,
}

impl Default for SystemPorts {
    fn default() -> SystemPorts {
        SystemPorts {
            afxdp_offloads: false,
            afxdp_napi_defer: std::time::Duration::ZERO,
            vxlan_source_ports: VXLAN_SOURCE_PORTS,
        }
    }
}

impl SystemPorts {
    /// The node's underlay port `port` with its flow sources ([`VXLAN_SOURCE_PORTS`]) and
    /// taking super-frames.
    fn flow_sources(
        &self,
        port: vswitch::port::udp::UdpPort,
        vtep: Ipv4Addr,
    ) -> anyhow::Result<Box<dyn Port>> {
        let n = self.vxlan_source_ports;
        let port = port.with_flow_sources(n).with_context(|| {
            format!("underlay: {n} UDP sockets on {vtep} for the flows' source ports")
        })?;
        Ok(Box::new(port.with_offloads()))
    }
}

impl PortOpener for SystemPorts {
    fn afxdp_offloads(&self) -> bool {
        self.afxdp_offloads
    }

    fn open(&mut self, p: &PortPlan, offloads: bool) -> anyhow::Result<Box<dyn Port>> {
        match (&p.attach, &p.kind) {
            (Attach::Tap(ifname), PortKind::Endpoint { mac, addr, netns }) => {
                let tap = vswitch::port::tap::TapPort::create(&vswitch::port::tap::TapConfig {
                    name: ifname.clone(),
                    netns: netns.clone(),
                    mac: *mac,
                    mtu: p.mtu,
                    addr: Some(*addr),
                    offloads,
                    // The container keeps its interface while the node restarts.
                    persist: true,
                })
                .with_context(|| format!("endpoint {}: tap {ifname}", p.name))?;
                Ok(Box::new(tap))
            }
            (Attach::Tap(ifname), PortKind::Ingress) => {
                let tap = vswitch::port::tap::TapPort::create(&vswitch::port::tap::TapConfig {
                    name: ifname.clone(),
                    netns: None,
                    mac: Mac::docker_default(Ipv4Addr::UNSPECIFIED),
                    mtu: p.mtu,
                    addr: None,
                    offloads: false,
                    persist: false,
                })
                .with_context(|| format!("ingress: tap {ifname}"))?;
                Ok(Box::new(tap))
            }
            (Attach::Afxdp(ifname), kind) => {
                // With buffers for super-frames, the container keeps its TCP/IPv4 offloads and
                // the port takes its super-frames; else they must be off (raw frames only).
                let mut rx_super = false;
                if let PortKind::Endpoint {
                    netns: Some(ns), ..
                } = kind
                {
                    rx_super = offloads && self.afxdp_offloads;
                    if rx_super {
                        crate::sys::enable_peer_tcp4_offloads(ifname, ns).with_context(|| {
                            format!(
                                "endpoint {}: turning TCP/IPv4 offloads on in netns {ns}",
                                p.name
                            )
                        })?;
                    } else {
                        crate::sys::disable_peer_offloads(ifname, ns).with_context(|| {
                            format!("endpoint {}: turning offloads off in netns {ns}", p.name)
                        })?;
                    }
                }
                let port =
                    vswitch::port::afxdp::AfxdpPort::open(&vswitch::port::afxdp::AfxdpConfig {
                        ifname: ifname.clone(),
                        rx_super_frames: rx_super,
                        napi_defer: if rx_super {
                            std::time::Duration::ZERO
                        } else {
                            self.afxdp_napi_defer
                        },
                        ..Default::default()
                    })
                    .with_context(|| format!("port {}", p.name))?;
                if let Err(e) = super::ifsaved::record(port.changed_settings()) {
                    // The port works; only a crash would leave its settings behind.
                    tracing::warn!(port = %p.name, error = %e,
                        "cannot keep the interface's settings in the node's file: a crash would leave them changed");
                }
                if !self.afxdp_napi_defer.is_zero() && !rx_super && !port.napi_deferred() {
                    tracing::warn!(
                        port = %p.name,
                        ifname = %ifname,
                        "receive not deferred on this port: its XDP program runs in generic mode (no native XDP on the interface)"
                    );
                }
                Ok(Box::new(port))
            }
        }
    }

    fn underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let port = vswitch::port::udp::UdpPort::bind(SocketAddrV4::new(vtep, vxlan::VXLAN_PORT))
            .with_context(|| format!("underlay: binding UDP {vtep}:{}", vxlan::VXLAN_PORT))?;
        self.flow_sources(port, vtep)
    }

    fn shared_underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let addr = SocketAddrV4::new(vtep, vxlan::VXLAN_PORT);
        let port = vswitch::port::udp::UdpPort::bind_shared(addr).with_context(|| {
            format!("underlay: binding UDP {addr} with SO_REUSEPORT (one socket per worker)")
        })?;
        self.flow_sources(port, vtep)
    }

    fn esp_underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let port = vswitch::port::udp::EspPort::bind(vtep).with_context(|| {
            format!("encrypted underlay: a raw socket for ESP (IP protocol 50) on {vtep} (needs CAP_NET_RAW)")
        })?;
        Ok(Box::new(port))
    }

    fn esp_udp_underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let port = crate::config::ESP_UDP_PORT;
        let p = vswitch::port::udp::UdpPort::bind(SocketAddrV4::new(vtep, port))
            .with_context(|| format!("encrypted underlay: binding UDP {vtep}:{port} (ESP in UDP)"))?
            .with_peer_port(port);
        Ok(Box::new(p))
    }
}
