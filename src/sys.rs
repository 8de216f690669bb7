//! Small system helpers of the node, off the packet path: finding the container side of a
//! veth and turning its offloads off. (The poll thread's eventfd and `poll(2)` are in
//! `vswitch::worker`, with the poll loop.)

use anyhow::Context;

/// The container side of the veth whose node side is `host_if` (in the calling thread's
/// namespace): its name inside namespace `netns`.
pub fn veth_peer_name(host_if: &str, netns: &str) -> anyhow::Result<String> {
    let path = format!("/sys/class/net/{host_if}/iflink");
    let iflink: u32 = std::fs::read_to_string(&path)
        .with_context(|| format!("{host_if}: reading {path} (is it a veth in this namespace?)"))?
        .trim()
        .parse()
        .with_context(|| format!("{host_if}: {path} is not a number"))?;
    let name = vswitch::port::netns::run_in(Some(netns), || {
        let mut buf = [0u8; libc::IF_NAMESIZE];
        // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(iflink, buf.as_mut_ptr().cast()) };
        (!p.is_null()).then(|| {
            let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..len]).into_owned()
        })
    })?;
    name.with_context(|| format!("{host_if}: its peer (ifindex {iflink}) is not in netns {netns}"))
}

/// Turn TX checksum offload, TSO and GSO on, and every segmentation offload but TCP/IPv4's off,
/// on the container side of `host_if` (a veth whose peer is in `netns`): the AF_XDP port
/// receives the container's TCP super-frames beside its rings and finishes its checksums.
pub fn enable_peer_tcp4_offloads(host_if: &str, netns: &str) -> anyhow::Result<()> {
    let peer = veth_peer_name(host_if, netns)?;
    vswitch::port::ethtool::enable_tcp4_offloads(Some(netns), &peer)
        .with_context(|| format!("{peer} in netns {netns}"))?;
    Ok(())
}

/// Turn TX checksum offload, TSO and GSO off on the container side of `host_if` (a veth whose
/// peer is in `netns`): frames reach AF_XDP as the container built them, so partial checksums
/// and 64 KiB segments must not be left for a NIC that is not there.
pub fn disable_peer_offloads(host_if: &str, netns: &str) -> anyhow::Result<()> {
    let peer = veth_peer_name(host_if, netns)?;
    vswitch::port::ethtool::disable_offloads(Some(netns), &peer)
        .with_context(|| format!("{peer} in netns {netns}"))?;
    Ok(())
}
