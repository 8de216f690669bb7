//! The node-side handlers of the CNI commands: ADD (allocate an address, create the veth in
//! `CNI_NETNS`, apply the desired state with the attachment, keep it), DEL, CHECK, STATUS and GC.
//! Control plane, off the packet path: run on the control side of `vxmesh run` under its change
//! lock; every desired state goes through the node's one change path (`apply`), and blocking
//! system calls run on tokio's blocking threads.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::process::Command;

use serde_json::Value;

use super::conf::{conf_version, endpoint_name, parse_conf};
use super::netns::{Netns, create_veth, delete_veth, exists_in, in_netns, named_netns};
use super::types::{failed, with_version};
use super::{Attachment, CniCall, CniError, Local, Op, allocate, code, host_if_name, result};
use crate::config::{Cluster, is_dns_label};

/// Make `cluster` the node's state through its change path: what changed, or why not.
pub type Apply<'a> =
    dyn FnMut(Cluster) -> Pin<Box<dyn Future<Output = Result<String, String>> + 'a>> + 'a;

/// What a served call prints on success: the result (ADD), nothing (the rest), and for CHECK
/// the endpoint whose port must be in the switch.
pub enum Served {
    /// Print this.
    Out(String),
    /// CHECK passed here; the port of this endpoint must be attached.
    CheckPort(String),
}

/// Serve one call. `apply` makes a desired state the node's (the daemon's change path).
pub async fn handle(
    op: Op,
    call: CniCall,
    local: &mut Local,
    apply: &mut Apply<'_>,
) -> Result<Served, CniError> {
    // One event per call that changes the node (ADD, DEL, GC) or fails: what, for whom, why.
    let who = (
        call.container_id.clone(),
        call.ifname.clone(),
        call.config
            .get("network")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    );
    let r = match op {
        Op::Status => {
            conf_version(&call.config)?;
            Ok(Served::Out(String::new()))
        }
        Op::Add => add(call, local, apply).await.map(Served::Out),
        Op::Del => del(call, local, apply)
            .await
            .map(|()| Served::Out(String::new())),
        Op::Check => check(call, local).await.map(Served::CheckPort),
        Op::Gc => gc(call, local, apply)
            .await
            .map(|()| Served::Out(String::new())),
    };
    let (container, ifname, network) = who;
    match &r {
        Ok(_) if matches!(op, Op::Add | Op::Del | Op::Gc) => tracing::info!(
            op = ?op, container, ifname, network, "cni: {op:?} done"
        ),
        Ok(_) => tracing::debug!(op = ?op, container, ifname, network, "cni: {op:?} done"),
        Err(e) => tracing::warn!(
            op = ?op, container, ifname, network, code = e.code, reason = %e.msg,
            details = %e.details, "cni: {op:?} refused"
        ),
    }
    r
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a blocking CNI task panicked")
}

async fn add(call: CniCall, local: &mut Local, apply: &mut Apply<'_>) -> Result<String, CniError> {
    let conf = parse_conf(&call.config)?;
    let v = conf.version.clone();
    let net = local
        .source
        .network(&conf.network)
        .cloned()
        .ok_or_else(|| {
            let nets: Vec<&str> = local
                .source
                .networks
                .iter()
                .map(|n| n.name.as_str())
                .collect();
            with_version(
                &v,
                code::INVALID_CONFIG,
                format!(
                    "unknown network {:?} (this node's cluster has: {})",
                    conf.network,
                    nets.join(", ")
                ),
            )
        })?;
    if call.container_id.is_empty() {
        return Err(with_version(
            &v,
            code::INVALID_ENV,
            "CNI_CONTAINERID is not set",
        ));
    }
    if !vswitch::port::iface::valid_ifname(&call.ifname) {
        return Err(with_version(
            &v,
            code::INVALID_ENV,
            format!("CNI_IFNAME {:?} is not an interface name", call.ifname),
        ));
    }
    if call.netns.is_empty() {
        return Err(with_version(&v, code::INVALID_ENV, "CNI_NETNS is not set"));
    }
    // Opened once: every step below uses this descriptor (checked, then entered).
    let path = call.netns.clone();
    let netns = std::sync::Arc::new(
        blocking(move || Netns::open(&path))
            .await
            .map_err(|e| with_version(&v, code::INVALID_ENV, format!("CNI_NETNS: {e}")))?,
    );
    if conf.tap && named_netns(&call.netns).is_none() {
        return Err(with_version(
            &v,
            code::INVALID_CONFIG,
            format!(
                "\"attach\": \"tap\" needs CNI_NETNS under /run/netns (a named namespace), not {}",
                call.netns
            ),
        ));
    }
    if local
        .find(&conf.network, &call.container_id, &call.ifname)
        .is_some()
    {
        return Err(with_version(
            &v,
            code::ALREADY_ATTACHED,
            format!(
                "container {} is attached to {} as {} already (DEL it first)",
                call.container_id, conf.network, call.ifname
            ),
        ));
    }
    let (ns, ifn) = (netns.clone(), call.ifname.clone());
    match blocking(move || exists_in(&ns, &ifn)).await {
        Ok(false) => {}
        Ok(true) => {
            return Err(with_version(
                &v,
                code::INTERFACE_EXISTS,
                format!("interface {} exists already in {}", call.ifname, call.netns),
            ));
        }
        Err(e) => return Err(failed(&v, format!("entering {}: {e}", call.netns))),
    }
    let no_address = || {
        with_version(
            &v,
            code::NO_ADDRESS,
            format!(
                "no free address in network {:?} ({}) for node {}",
                net.name, net.subnet, local.node
            ),
        )
    };
    // With the store: an address of one of this node's blocks (a block claimed if they are
    // full); else one of the node's share of the subnet.
    let (ip, picked) = match (call.ipam_ip, local.store.as_mut()) {
        // From the IPAM plugin: it must be a host address of the network's subnet (the
        // plugin releases it with an IPAM DEL when the ADD fails).
        (Some(ip), _) => {
            if !net.subnet.contains_host(ip) {
                return Err(with_version(
                    &v,
                    code::INVALID_CONFIG,
                    format!(
                        "the ipam plugin gave {ip}, which is not a host address of network {:?}'s subnet {}: its range must be inside the subnet",
                        net.name, net.subnet
                    ),
                ));
            }
            (ip, None)
        }
        (None, _) if conf.ipam => {
            return Err(with_version(
                &v,
                code::UNSUPPORTED_FIELD,
                "the config has an \"ipam\" section but the call carries no address from it (an older vxmesh-cni?)",
            ));
        }
        (None, Some(st)) => {
            let p = st
                .pick(&local.node, &net, &local.source, &local.atts)
                .await
                .map_err(|e| failed(&v, format!("allocating an address: {e}")))?
                .ok_or_else(no_address)?;
            (p.ip, Some(p))
        }
        (None, None) => (
            allocate(&local.source, &local.node, &local.atts, &net).ok_or_else(no_address)?,
            None,
        ),
    };
    let name = endpoint_name(&call.args, &call.container_id);
    let services: Vec<&str> = local
        .source
        .services
        .iter()
        .filter(|s| s.network == net.name)
        .map(|s| s.name.as_str())
        .collect();
    let (mut aliases, mut backend_of) = (Vec::new(), Vec::new());
    for a in &conf.aliases {
        if let Some(s) = services.iter().find(|s| s.eq_ignore_ascii_case(a)) {
            if !backend_of.contains(&s.to_string()) {
                backend_of.push(s.to_string());
            }
        } else if is_dns_label(a)
            && !a.eq_ignore_ascii_case(&name)
            && !aliases.iter().any(|x: &String| x.eq_ignore_ascii_case(a))
        {
            aliases.push(a.clone());
        }
    }
    let att = Attachment {
        network: net.name.clone(),
        cni_name: conf.cni_name.clone(),
        container_id: call.container_id.clone(),
        ifname: call.ifname.clone(),
        name,
        ip,
        tap: conf.tap,
        host_if: if conf.tap {
            String::new()
        } else {
            host_if_name(&net.name, &call.container_id, &call.ifname)
        },
        netns: call.netns.clone(),
        aliases,
        services: backend_of,
        store_rev: 0,
    };
    local.atts.push(att.clone());
    let desired = match local.desired(&local.source) {
        Ok(d) => d,
        Err(e) => {
            local.atts.pop();
            return Err(failed(&v, e));
        }
    };
    if !att.tap {
        let (a, mtu, prefix, ns) = (att.clone(), net.mtu, net.subnet.prefix, netns.clone());
        if let Err(e) = blocking(move || create_veth(&a, &ns, mtu, prefix)).await {
            local.atts.pop();
            return Err(failed(&v, format!("creating the veth: {e}")));
        }
    }
    let undo_veth = |att: &Attachment| {
        let host = att.host_if.clone();
        let tap = att.tap;
        async move {
            if !tap {
                blocking(move || delete_veth(&host)).await;
            }
        }
    };
    if let Err(e) = apply(desired).await {
        local.atts.pop();
        undo_veth(&att).await;
        return Err(failed(&v, "the node refused the attachment").details(e));
    }
    // With the store: the endpoint written there, one key, so every node learns it.
    if let Some(st) = local.store.as_mut() {
        match st.write_endpoint(&local.node, &att, picked.as_ref()).await {
            Ok(rev) => {
                if let Some(a) = local.atts.last_mut() {
                    a.store_rev = rev;
                }
                local.deleted.retain(|d| d != &att.name);
            }
            Err(e) => {
                local.atts.pop();
                if let Ok(back) = local.desired(&local.source) {
                    let _ = apply(back).await;
                }
                undo_veth(&att).await;
                return Err(failed(&v, e));
            }
        }
    }
    if let Err(e) = local.save() {
        local.atts.pop();
        let back = local.desired(&local.source);
        if let Ok(back) = back {
            let _ = apply(back).await;
        }
        undo_veth(&att).await;
        return Err(failed(
            &v,
            format!("writing {}: {e}", local.state_file.display()),
        ));
    }
    Ok(result(&att, &net, &v).to_string())
}

/// Take attachment `i` out of the node: the desired state without it applied, its veth deleted
/// (a TAP goes with its port), the state file written.
async fn detach(i: usize, local: &mut Local, apply: &mut Apply<'_>) -> Result<(), String> {
    // With the store: its endpoint leaves the store first (every node forgets it through the
    // watch); left out of this node's source until the watch brings the delete.
    if local.atts[i].store_rev > 0
        && let Some(st) = local.store.as_mut()
    {
        st.delete_endpoint(&local.atts[i]).await?;
        local.deleted.push(local.atts[i].name.clone());
    }
    let att = local.atts.remove(i);
    let desired = match local.desired(&local.source) {
        Ok(d) => d,
        Err(e) => {
            local.atts.insert(i, att);
            return Err(e);
        }
    };
    if let Err(e) = apply(desired).await {
        local.atts.insert(i, att);
        return Err(e);
    }
    // Its address block, if no attachment of this node uses it any more and the node holds
    // another one of the network: given back (best effort: a block kept is only unused).
    if att.store_rev > 0
        && let Some(st) = local.store.as_mut()
        && let Err(e) = st
            .release_surplus_block(&local.node, &att, &local.atts)
            .await
    {
        tracing::warn!(error = %e, network = %att.network, "cni: releasing an address block");
    }
    if !att.tap {
        let host = att.host_if.clone();
        blocking(move || delete_veth(&host)).await;
    }
    local
        .save()
        .map_err(|e| format!("writing {}: {e}", local.state_file.display()))
}

async fn del(call: CniCall, local: &mut Local, apply: &mut Apply<'_>) -> Result<(), CniError> {
    let v = conf_version(&call.config)?;
    // DEL must succeed when there is nothing to delete: no network in the config, an unknown
    // attachment, a second DEL.
    let Some(network) = call.config.get("network").and_then(Value::as_str) else {
        return Ok(());
    };
    match local.find(network, &call.container_id, &call.ifname) {
        Some(i) => detach(i, local, apply).await.map_err(|e| failed(&v, e)),
        None => {
            // An ADD that died half-way (the node killed) may have left its veth.
            let host = host_if_name(network, &call.container_id, &call.ifname);
            blocking(move || delete_veth(&host)).await;
            Ok(())
        }
    }
}

async fn check(call: CniCall, local: &mut Local) -> Result<String, CniError> {
    let conf = parse_conf(&call.config)?;
    let v = conf.version.clone();
    let net = local
        .source
        .network(&conf.network)
        .cloned()
        .ok_or_else(|| {
            with_version(
                &v,
                code::INVALID_CONFIG,
                format!("unknown network {:?}", conf.network),
            )
        })?;
    let i = local
        .find(&conf.network, &call.container_id, &call.ifname)
        .ok_or_else(|| {
            with_version(
                &v,
                code::UNKNOWN_CONTAINER,
                format!(
                    "container {} has no attachment {} in network {}",
                    call.container_id, call.ifname, conf.network
                ),
            )
        })?;
    let a = local.atts[i].clone();
    let want = format!("{}/{}", a.ip, net.subnet.prefix);
    let (ns, ifn, host, tap) = (a.netns.clone(), a.ifname.clone(), a.host_if.clone(), a.tap);
    let seen = blocking(move || -> Result<(), String> {
        if !tap && vswitch::port::iface::index_of(&host).is_none() {
            return Err(format!("the node side {host} of the veth is gone"));
        }
        let out = in_netns(&ns, || {
            Command::new("ip")
                .args(["-o", "-4", "addr", "show", "dev", &ifn])
                .output()
        })
        .map_err(|e| format!("{ns}: {e}"))?
        .map_err(|e| format!("running ip: {e}"))?;
        if !out.status.success() {
            return Err(format!("interface {ifn} is not in {ns}"));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.split_whitespace().any(|w| w == want) {
            return Err(format!(
                "interface {ifn} in {ns} does not have address {want}"
            ));
        }
        Ok(())
    })
    .await;
    seen.map_err(|e| failed(&v, format!("CHECK failed: {e}")))?;
    Ok(a.name)
}

async fn gc(call: CniCall, local: &mut Local, apply: &mut Apply<'_>) -> Result<(), CniError> {
    let v = conf_version(&call.config)?;
    let name = call
        .config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // Without the list (or with something else), GC would remove every attachment: refuse.
    let Some(list) = call
        .config
        .get("cni.dev/valid-attachments")
        .and_then(Value::as_array)
    else {
        return Err(with_version(
            &v,
            code::INVALID_CONFIG,
            "GC: the config has no cni.dev/valid-attachments list; nothing was removed",
        ));
    };
    let valid: HashSet<(String, String)> = Some(list)
        .map(|l| {
            l.iter()
                .filter_map(|x| {
                    Some((
                        x.get("containerID")?.as_str()?.to_string(),
                        x.get("ifname")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut errors = Vec::new();
    while let Some(i) = local.atts.iter().position(|a| {
        a.cni_name == name && !valid.contains(&(a.container_id.clone(), a.ifname.clone()))
    }) {
        let what = local.atts[i].name.clone();
        if let Err(e) = detach(i, local, apply).await {
            errors.push(format!("{what}: {e}"));
            break;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(failed(&v, "GC could not remove every attachment").details(errors.join("; ")))
    }
}
