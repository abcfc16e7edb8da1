//! The CNI verbs: parse, open the locked store, call the allocator, build the result.

use crate::allocator::{allocate, Owner, Request as AllocRequest};
use crate::config::{parse_resolv_conf, IpamConfig};
use crate::store::DiskStore;
use cni::{code, CniResult, Dns, Error, IpConfig, Plugin, Request, Result};
use std::net::IpAddr;

/// The host-local plugin (stateless; all state is on disk under the lock).
pub struct HostLocal;

fn owner_of(req: &Request) -> Owner {
    Owner::new(req.env.container_id.trim(), req.env.ifname.clone())
}

/// Config for verbs other than ADD: CNI_ARGS is not consulted, so a stray or unknown
/// CNI_ARGS key can never block a DEL, CHECK or GC.
fn config_without_args(req: &Request) -> Result<IpamConfig> {
    IpamConfig::parse(&req.conf.raw, &req.conf.name, req.conf.cni_version, None)
}

fn read_dns(conf: &IpamConfig) -> Result<Dns> {
    let Some(path) = &conf.resolv_conf else {
        return Ok(Dns::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            code::IO,
            format!(
                "reading ipam.resolvConf {}: {e}; point it at a readable resolv.conf or remove it",
                path.display()
            ),
        )
    })?;
    Ok(parse_resolv_conf(&text))
}

impl Plugin for HostLocal {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let args = req.env.cni_args(&["IP"])?;
        let conf = IpamConfig::parse(
            &req.conf.raw,
            &req.conf.name,
            req.conf.cni_version,
            args.get("IP").map(String::as_str),
        )?;
        let dns = read_dns(&conf)?;
        let lease_len = req.env.container_id.len() + 2 + req.env.ifname.len();
        if lease_len as u64 > crate::store::MAX_LEASE_BYTES {
            return Err(cni::Error::new(
                cni::code::INVALID_ENV,
                format!(
                    "CNI_CONTAINERID is {} bytes: host-local records it in a lease file of at most {} bytes (ID, CRLF, ifname); use a shorter container ID",
                    req.env.container_id.len(),
                    crate::store::MAX_LEASE_BYTES
                ),
            ));
        }
        let owner = owner_of(req);
        let mut store = DiskStore::open(&conf.data_dir, &conf.network, conf.sets.len())?;
        let leases = allocate(
            &mut store,
            &AllocRequest {
                network: &conf.network,
                sets: &conf.sets,
                owner: &owner,
                requested: &conf.requested,
            },
        )?;
        let hints: Vec<(usize, IpAddr)> = leases
            .iter()
            .map(|l| (l.set_index, l.address.addr()))
            .collect();
        store.record_hints(&owner, &hints);
        Ok(CniResult {
            interfaces: Vec::new(),
            ips: leases
                .iter()
                .map(|l| IpConfig {
                    address: l.address,
                    gateway: Some(l.gateway),
                    interface: None,
                })
                .collect(),
            routes: conf.routes,
            dns,
        })
    }

    fn del(&self, req: &Request) -> Result<()> {
        let conf = config_without_args(req)?;
        let Some(mut store) =
            DiskStore::open_existing(&conf.data_dir, &conf.network, conf.sets.len())?
        else {
            return Ok(()); // never allocated here: nothing to release
        };
        store.release_owner(&owner_of(req))?;
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = config_without_args(req)?;
        let owner = owner_of(req);
        let store = DiskStore::open_existing(&conf.data_dir, &conf.network, conf.sets.len())?;
        let held = match store {
            Some(mut store) => store.find_owner(&owner)?,
            None => Vec::new(),
        };
        if held.is_empty() {
            return Err(Error::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "host-local: Failed to find address added by container {}",
                    owner.container_id
                ),
            )
            .with_details(format!(
                "no reservation for ifname {} in {}",
                owner.ifname,
                conf.data_dir.join(&conf.network).display()
            )));
        }
        // Every address prevResult claims from our ranges must still be reserved for us.
        if let Some(prev) = req.conf.prev_result()? {
            for ip in prev.ips.iter().map(|c| c.address.addr()) {
                let ours = conf.sets.iter().any(|s| s.range_for(ip).is_some());
                if ours && !held.contains(&ip) {
                    return Err(Error::new(
                        code::UNKNOWN_CONTAINER,
                        format!(
                            "host-local: address {ip} in prevResult is not reserved for \
                             container {} ifname {} in network {:?}",
                            owner.container_id, owner.ifname, conf.network
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let Some(valid) = req.conf.valid_attachments()? else {
            eprintln!(
                "host-local: GC for network {:?} without cni.dev/valid-attachments: nothing \
                 removed (no list means no information, not an empty list)",
                req.conf.name
            );
            return Ok(());
        };
        let conf = config_without_args(req)?;
        let Some(mut store) =
            DiskStore::open_existing(&conf.data_dir, &conf.network, conf.sets.len())?
        else {
            return Ok(());
        };
        let report = store.gc(&valid)?;
        if !report.skipped.is_empty() {
            eprintln!(
                "host-local: GC left {} non-regular entr(y/ies) alone in {}: {:?}",
                report.skipped.len(),
                store.path().display(),
                report.skipped
            );
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = config_without_args(req)?;
        let Some(store) = DiskStore::open_existing(&conf.data_dir, &conf.network, conf.sets.len())?
        else {
            return Ok(()); // nothing reserved yet
        };
        let full = store.exhausted_sets(&conf.sets)?;
        if let Some(first) = full.first() {
            let names: Vec<String> = full.iter().map(|s| format!("{} ({s})", s.field)).collect();
            return Err(Error::new(
                code::STATUS_UNAVAILABLE,
                format!(
                    "network {:?} cannot serve ADD: no free address in range set {} — run GC \
                     to release reservations of containers that are gone, or use a larger range",
                    conf.network, first.field
                ),
            )
            .with_details(names.join("; ")));
        }
        Ok(())
    }
}
