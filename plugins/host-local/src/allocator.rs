//! Choosing addresses: pure logic over a [`Store`], unit-tested with an in-memory store.
//!
//! The allocator never touches the disk itself. The store's one hard guarantee is that
//! [`Store::reserve`] is atomic and exclusive (on disk: create-if-absent of `<dir>/<ip>`),
//! which is what keeps two allocators — ours or the reference's — from handing out the same
//! address, with or without the lock.

use crate::range::RangeSet;
use cni::{code, Error, Result};
use ipnet::IpNet;
use std::net::IpAddr;

/// Who holds a reservation: the (container ID, ifname) pair a lease file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// The container ID (CNI_CONTAINERID).
    pub container_id: String,
    /// The interface name inside the container (CNI_IFNAME).
    pub ifname: String,
}

/// The separator the reference writes between ID and ifname; part of the on-disk contract.
pub const LINE_BREAK: &str = "\r\n";

impl Owner {
    /// Build an owner.
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Owner {
        Owner {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// The exact bytes of a lease file, as the reference writes them: `<id>\r\n<ifname>`.
    pub fn lease_contents(&self) -> String {
        format!("{}{LINE_BREAK}{}", self.container_id.trim(), self.ifname)
    }
}

/// What a lease file says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Written by ferry or a reference plugin of the last years: ID and ifname.
    Owner(Owner),
    /// Written by an old reference plugin: only the container ID (any ifname matches).
    LegacyId(String),
    /// Empty or unreadable (a reference crash between create and write, a symlink, …).
    Unknown,
}

impl Holder {
    /// Parse a lease file's bytes with the reference's matching rules (whitespace around
    /// the whole content is ignored).
    pub fn parse(bytes: &[u8]) -> Holder {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Holder::Unknown;
        };
        let text = text.trim();
        if text.is_empty() {
            return Holder::Unknown;
        }
        match text.split_once(LINE_BREAK) {
            Some((id, ifname)) if !id.is_empty() && !ifname.contains(LINE_BREAK) => {
                Holder::Owner(Owner::new(id, ifname))
            }
            Some(_) => Holder::Unknown,
            None => Holder::LegacyId(text.to_string()),
        }
    }

    /// True when this lease belongs to `owner` (a legacy ID-only lease matches any ifname
    /// of that container, as in the reference).
    pub fn is_held_by(&self, owner: &Owner) -> bool {
        match self {
            Holder::Owner(o) => {
                o.container_id == owner.container_id.trim() && o.ifname == owner.ifname
            }
            Holder::LegacyId(id) => *id == owner.container_id.trim(),
            Holder::Unknown => false,
        }
    }

    /// The container ID, if the file names one.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Holder::Owner(o) => Some(&o.container_id),
            Holder::LegacyId(id) => Some(id),
            Holder::Unknown => None,
        }
    }
}

/// The seam between allocation logic and where reservations live.
pub trait Store {
    /// Atomically create the reservation of `ip` (in range set `set_index`) for `owner` if
    /// nobody holds it. `Ok(false)`: already taken. Must be exclusive even against other
    /// processes.
    fn reserve(&mut self, ip: IpAddr, owner: &Owner, set_index: usize) -> Result<bool>;
    /// Remove the reservation of `ip` if `owner` still holds it (rollback).
    fn release(&mut self, ip: IpAddr, owner: &Owner) -> Result<()>;
    /// Who holds `ip`; `None` when it is free.
    fn holder(&mut self, ip: IpAddr) -> Result<Option<Holder>>;
    /// The last address handed out from range set `set_index` (round-robin cursor).
    fn last_reserved(&mut self, set_index: usize) -> Option<IpAddr>;
    /// Move the round-robin cursor of range set `set_index`.
    fn set_last_reserved(&mut self, set_index: usize, ip: IpAddr) -> Result<()>;
    /// Addresses `owner` already holds, found without listing every lease (a hint that
    /// may miss leases written by other programs; callers treat it as best effort).
    fn known_leases_of(&mut self, owner: &Owner) -> Result<Vec<IpAddr>>;
}

/// One address handed out: which range set, the address with its subnet's prefix, and
/// that range's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Index of the range set (also the `last_reserved_ip.<n>` suffix).
    pub set_index: usize,
    /// The address, with the prefix of its subnet (`10.88.0.5/16`).
    pub address: IpNet,
    /// The gateway of the range the address came from.
    pub gateway: IpAddr,
    /// True when this call created the reservation (false: it already existed).
    pub created: bool,
}

/// Everything one ADD asks of the allocator.
pub struct Request<'a> {
    /// Network name (for messages).
    pub network: &'a str,
    /// Range sets, in config order.
    pub sets: &'a [RangeSet],
    /// Who the addresses are for.
    pub owner: &'a Owner,
    /// Specific addresses asked for (CNI_ARGS IP, args.cni.ips, runtimeConfig.ips).
    pub requested: &'a [IpAddr],
}

/// Hand out one address per range set, all or nothing.
///
/// Requested addresses go to the set containing them (each set takes at most one); a
/// requested address in no set, the gateway, or held by someone else is an error. A set
/// where the owner already holds an address (a repeated ADD) returns that address, so a
/// retried ADD neither fails nor leaks. On any error, every reservation made by this call
/// is released before returning.
pub fn allocate(store: &mut dyn Store, req: &Request) -> Result<Vec<Lease>> {
    let mut requested: Vec<IpAddr> = Vec::new();
    for ip in req.requested {
        if !requested.contains(ip) {
            requested.push(*ip);
        }
    }
    let mut per_set: Vec<Option<IpAddr>> = vec![None; req.sets.len()];
    for (i, set) in req.sets.iter().enumerate() {
        if let Some(pos) = requested.iter().position(|ip| set.range_for(*ip).is_some()) {
            per_set[i] = Some(requested.remove(pos));
        }
    }
    if !requested.is_empty() {
        let list: Vec<String> = requested.iter().map(|ip| ip.to_string()).collect();
        return Err(Error::invalid_config(format!(
            "failed to allocate all requested IPs for network {:?}: {} not inside any range \
             (or two requested addresses fall in the same range set)",
            req.network,
            list.join(", ")
        )));
    }

    let known = store.known_leases_of(req.owner)?;
    let mut leases: Vec<Lease> = Vec::with_capacity(req.sets.len());
    for (i, set) in req.sets.iter().enumerate() {
        match allocate_one(store, req, i, set, per_set[i], &known) {
            Ok(lease) => leases.push(lease),
            Err(e) => {
                for lease in leases.iter().filter(|l| l.created) {
                    let _ = store.release(lease.address.addr(), req.owner);
                }
                return Err(e);
            }
        }
    }
    Ok(leases)
}

fn lease_in(set: &RangeSet, set_index: usize, ip: IpAddr, created: bool) -> Result<Lease> {
    let range = set
        .range_for(ip)
        .ok_or_else(|| Error::internal(format!("{ip} is not in {}", set.field)))?;
    let address = IpNet::new(ip, range.subnet.prefix_len())
        .map_err(|e| Error::internal(format!("building address {ip}: {e}")))?;
    Ok(Lease {
        set_index,
        address,
        gateway: range.gateway,
        created,
    })
}

fn allocate_one(
    store: &mut dyn Store,
    req: &Request,
    set_index: usize,
    set: &RangeSet,
    requested: Option<IpAddr>,
    known: &[IpAddr],
) -> Result<Lease> {
    if let Some(ip) = requested {
        let range = set
            .range_for(ip)
            .ok_or_else(|| Error::internal(format!("{ip} is not in {}", set.field)))?;
        if !range.is_allocatable(ip) {
            return Err(Error::invalid_config(format!(
                "requested IP {ip} is the gateway, network or broadcast address of {range} \
                 in network {:?}; ask for another address",
                req.network
            )));
        }
        if known.contains(&ip) {
            return lease_in(set, set_index, ip, false);
        }
        if let Some(held) = known.iter().find(|k| set.range_for(**k).is_some()) {
            // A second address in one range set would outlive the DEL of this attachment.
            return Err(Error::new(
                code::ADDRESS_IN_USE,
                format!(
                    "container {} ifname {} already holds {held} in range set {} of network                      {:?}; DEL it before asking for {ip}",
                    req.owner.container_id, req.owner.ifname, set.field, req.network
                ),
            ));
        }
        if store.reserve(ip, req.owner, set_index)? {
            store.set_last_reserved(set_index, ip).inspect_err(|_| {
                let _ = store.release(ip, req.owner);
            })?;
            return lease_in(set, set_index, ip, true);
        }
        return match store.holder(ip)? {
            Some(h) if h.is_held_by(req.owner) => lease_in(set, set_index, ip, false),
            holder => Err(Error::new(
                code::ADDRESS_IN_USE,
                format!(
                    "requested IP {ip} in network {:?} is already reserved{}; release it \
                     (DEL that container) or ask for another address",
                    req.network,
                    holder
                        .as_ref()
                        .and_then(|h| h.container_id())
                        .map(|id| format!(" by container {id}"))
                        .unwrap_or_default()
                ),
            )),
        };
    }

    if let Some(ip) = known.iter().find(|ip| set.range_for(**ip).is_some()) {
        return lease_in(set, set_index, *ip, false);
    }
    let last = store.last_reserved(set_index);
    for (ip, _) in set.candidates(last) {
        if store.reserve(ip, req.owner, set_index)? {
            store.set_last_reserved(set_index, ip).inspect_err(|_| {
                let _ = store.release(ip, req.owner);
            })?;
            return lease_in(set, set_index, ip, true);
        }
    }
    Err(Error::new(
        code::RANGE_EXHAUSTED,
        format!(
            "no free address in range set {} ({set}) of network {:?}: every address is \
             reserved — run GC to release reservations of containers that are gone, or use \
             a larger range",
            set.field, req.network
        ),
    ))
}

#[cfg(test)]
pub mod mem {
    //! An in-memory [`Store`] for unit tests.
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    /// Reservations in a map; `fail_cursor` makes `set_last_reserved` fail (rollback tests).
    #[derive(Default)]
    pub struct MemStore {
        pub leases: BTreeMap<IpAddr, Holder>,
        pub last: HashMap<usize, IpAddr>,
        pub fail_reserve_of: Option<IpAddr>,
    }

    impl Store for MemStore {
        fn reserve(&mut self, ip: IpAddr, owner: &Owner, _set_index: usize) -> Result<bool> {
            if self.fail_reserve_of == Some(ip) {
                return Err(Error::new(code::IO, "disk full"));
            }
            if self.leases.contains_key(&ip) {
                return Ok(false);
            }
            self.leases.insert(ip, Holder::Owner(owner.clone()));
            Ok(true)
        }
        fn release(&mut self, ip: IpAddr, owner: &Owner) -> Result<()> {
            if self.leases.get(&ip).is_some_and(|h| h.is_held_by(owner)) {
                self.leases.remove(&ip);
            }
            Ok(())
        }
        fn holder(&mut self, ip: IpAddr) -> Result<Option<Holder>> {
            Ok(self.leases.get(&ip).cloned())
        }
        fn last_reserved(&mut self, set_index: usize) -> Option<IpAddr> {
            self.last.get(&set_index).copied()
        }
        fn set_last_reserved(&mut self, set_index: usize, ip: IpAddr) -> Result<()> {
            self.last.insert(set_index, ip);
            Ok(())
        }
        fn known_leases_of(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
            Ok(self
                .leases
                .iter()
                .filter(|(_, h)| h.is_held_by(owner))
                .map(|(ip, _)| *ip)
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mem::MemStore;
    use super::*;
    use crate::range::RangeSpec;

    fn set(subnet: &str, start: Option<&str>, end: Option<&str>, field: &str) -> RangeSet {
        RangeSet::from_specs(
            &[RangeSpec {
                subnet: Some(subnet.into()),
                range_start: start.map(Into::into),
                range_end: end.map(Into::into),
                gateway: None,
            }],
            field,
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn add(
        store: &mut MemStore,
        sets: &[RangeSet],
        id: &str,
        requested: &[IpAddr],
    ) -> Result<Vec<Lease>> {
        let owner = Owner::new(id, "eth0");
        allocate(
            store,
            &Request {
                network: "fhlnet",
                sets,
                owner: &owner,
                requested,
            },
        )
    }

    #[test]
    fn hands_out_addresses_in_order_skipping_the_gateway() {
        let sets = [set("10.213.64.0/29", None, None, "ranges[0]")];
        let mut s = MemStore::default();
        let a = add(&mut s, &sets, "c1", &[]).unwrap();
        let b = add(&mut s, &sets, "c2", &[]).unwrap();
        assert_eq!(a[0].address.to_string(), "10.213.64.2/29");
        assert_eq!(a[0].gateway, ip("10.213.64.1"));
        assert_eq!(b[0].address.to_string(), "10.213.64.3/29");
    }

    #[test]
    fn released_address_is_not_reused_at_once() {
        let sets = [set("10.213.64.0/29", None, None, "ranges[0]")];
        let mut s = MemStore::default();
        add(&mut s, &sets, "c1", &[]).unwrap();
        s.release(ip("10.213.64.2"), &Owner::new("c1", "eth0"))
            .unwrap();
        let b = add(&mut s, &sets, "c2", &[]).unwrap();
        assert_eq!(b[0].address.addr(), ip("10.213.64.3"));
    }

    #[test]
    fn round_robin_wraps_to_the_start() {
        let sets = [set(
            "10.213.64.0/29",
            Some("10.213.64.5"),
            None,
            "ranges[0]",
        )];
        let mut s = MemStore::default();
        s.last.insert(0, ip("10.213.64.6"));
        let a = add(&mut s, &sets, "c1", &[]).unwrap();
        assert_eq!(a[0].address.addr(), ip("10.213.64.5"));
        assert_eq!(s.last[&0], ip("10.213.64.5"));
    }

    #[test]
    fn exhausted_range_names_network_range_and_the_fix() {
        let sets = [set("10.213.64.0/30", None, None, "ipam.ranges[0]")];
        let mut s = MemStore::default();
        add(&mut s, &sets, "c1", &[]).unwrap();
        let e = add(&mut s, &sets, "c2", &[]).unwrap_err();
        assert_eq!(e.code, code::RANGE_EXHAUSTED);
        assert!(
            e.msg.contains("fhlnet") && e.msg.contains("10.213.64.0/30"),
            "{}",
            e.msg
        );
        assert!(
            e.msg.contains("GC") && e.msg.contains("larger range"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn dual_stack_gives_one_address_per_set() {
        let sets = [
            set("10.213.64.0/24", None, None, "ranges[0]"),
            set("fd00:213:64::/120", None, None, "ranges[1]"),
        ];
        let mut s = MemStore::default();
        let l = add(&mut s, &sets, "c1", &[]).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].address.to_string(), "fd00:213:64::2/120");
        assert_eq!(s.last[&1], ip("fd00:213:64::2"));
    }

    #[test]
    fn all_or_nothing_across_range_sets() {
        let sets = [
            set("10.213.64.0/24", None, None, "ranges[0]"),
            set("fd00:213:64::/126", None, None, "ranges[1]"),
        ];
        let mut s = MemStore::default();
        add(&mut s, &sets, "c1", &[]).unwrap();
        add(&mut s, &sets, "c2", &[]).unwrap();
        let before = s.leases.len();
        let e = add(&mut s, &sets, "c3", &[]).unwrap_err();
        assert_eq!(e.code, code::RANGE_EXHAUSTED);
        assert_eq!(
            s.leases.len(),
            before,
            "the IPv4 reservation must be rolled back"
        );
    }

    #[test]
    fn store_failure_rolls_back_earlier_sets() {
        let sets = [
            set("10.213.64.0/24", None, None, "ranges[0]"),
            set("fd00:213:64::/120", None, None, "ranges[1]"),
        ];
        let mut s = MemStore {
            fail_reserve_of: Some(ip("fd00:213:64::2")),
            ..Default::default()
        };
        let e = add(&mut s, &sets, "c1", &[]).unwrap_err();
        assert_eq!(e.code, code::IO);
        assert!(s.leases.is_empty());
    }

    #[test]
    fn requested_ip_is_honoured_and_refused_when_taken() {
        let sets = [set("10.213.64.0/24", None, None, "ranges[0]")];
        let mut s = MemStore::default();
        let l = add(&mut s, &sets, "c1", &[ip("10.213.64.77")]).unwrap();
        assert_eq!(l[0].address.to_string(), "10.213.64.77/24");
        let e = add(&mut s, &sets, "c2", &[ip("10.213.64.77")]).unwrap_err();
        assert_eq!(e.code, code::ADDRESS_IN_USE);
        assert!(e.msg.contains("c1"), "{}", e.msg);
    }

    #[test]
    fn requested_gateway_or_outside_address_is_refused() {
        let sets = [set("10.213.64.0/24", None, None, "ranges[0]")];
        let mut s = MemStore::default();
        let e = add(&mut s, &sets, "c1", &[ip("10.213.64.1")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e = add(&mut s, &sets, "c1", &[ip("10.213.99.1")]).unwrap_err();
        assert!(e.msg.contains("10.213.99.1"), "{}", e.msg);
        assert!(s.leases.is_empty());
    }

    #[test]
    fn requested_ip_in_second_set_leaves_first_set_round_robin() {
        let sets = [
            set("10.213.64.0/24", None, None, "ranges[0]"),
            set("fd00:213:64::/120", None, None, "ranges[1]"),
        ];
        let mut s = MemStore::default();
        let l = add(&mut s, &sets, "c1", &[ip("fd00:213:64::42")]).unwrap();
        assert_eq!(l[0].address.addr(), ip("10.213.64.2"));
        assert_eq!(l[1].address.addr(), ip("fd00:213:64::42"));
    }

    #[test]
    fn repeated_add_returns_the_existing_lease() {
        let sets = [set("10.213.64.0/24", None, None, "ranges[0]")];
        let mut s = MemStore::default();
        let a = add(&mut s, &sets, "c1", &[]).unwrap();
        let b = add(&mut s, &sets, "c1", &[]).unwrap();
        assert_eq!(a[0].address, b[0].address);
        assert!(!b[0].created);
        assert_eq!(s.leases.len(), 1);
    }

    #[test]
    fn repeated_add_asking_for_another_address_is_refused() {
        let sets = [set("10.213.64.0/24", None, None, "ranges[0]")];
        let mut s = MemStore::default();
        add(&mut s, &sets, "c1", &[]).unwrap();
        let e = add(&mut s, &sets, "c1", &[ip("10.213.64.50")]).unwrap_err();
        assert_eq!(e.code, code::ADDRESS_IN_USE);
        assert!(
            e.msg.contains("10.213.64.2") && e.msg.contains("DEL"),
            "{}",
            e.msg
        );
        assert_eq!(s.leases.len(), 1);
        // Asking for the address it already holds is fine.
        let l = add(&mut s, &sets, "c1", &[ip("10.213.64.2")]).unwrap();
        assert!(!l[0].created);
    }

    #[test]
    fn holder_parsing_matches_the_reference_rules() {
        let o = Owner::new("c1", "eth0");
        assert_eq!(Holder::parse(b"c1\r\neth0"), Holder::Owner(o.clone()));
        assert!(Holder::parse(b"c1\r\neth0\n").is_held_by(&o));
        assert!(Holder::parse(b"c1").is_held_by(&o));
        assert!(Holder::parse(b"c1").is_held_by(&Owner::new("c1", "net1")));
        assert!(!Holder::parse(b"c1\r\neth1").is_held_by(&o));
        assert_eq!(Holder::parse(b""), Holder::Unknown);
        assert_eq!(Holder::parse(b"\xff\xfe"), Holder::Unknown);
        assert_eq!(o.lease_contents(), "c1\r\neth0");
    }
}
