//! The rules that turn a trusted `/_nodes/_all/http` answer into a backend's discovered servers.
//! Pure: the members so far and an answer in, the new members and the changes out.
//!
//! The rules are conservative on purpose. A node joins as soon as a trusted answer lists it with
//! an HTTP address and roles the filter accepts. A node leaves only when it has been missing
//! from `forget_after` answers in a row *and* fails its own checks: one small answer (a node
//! that lost its cluster, a cluster-state hiccup) never drops servers that still answer well.
//! A node that comes back at another address keeps its identity (its node id).

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::backend::Member;
use crate::config::{Name, RoleFilter};
use crate::nodes::{self, NodeId, NodeInfo, NodesAnswer, Publish};

/// A discovered member and how many answers in a row have not listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub member: Member,
    pub absent: u32,
}

/// What the configured servers (the seeds) are, so that the cluster's view of them is not
/// added a second time.
#[derive(Debug, Default)]
pub struct Seeds {
    pub names: HashSet<Name>,
    pub ids: HashSet<NodeId>,
    pub addrs: HashSet<SocketAddr>,
}

/// One change to the server set, or one node of the answer left out, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Joined(Member),
    Left {
        member: Member,
        why: String,
    },
    Moved {
        member: Member,
        from: Publish,
    },
    /// Now a configured server (a reload wrote it into the file): no longer discovery's.
    Configured(Member),
    /// Listed by the cluster, but not a server of this backend.
    Ignored {
        id: NodeId,
        name: String,
        why: String,
    },
}

/// Applies `answer` to `tracked`: who joins, who moved, who leaves. `passing(id)` says whether
/// a member passes its own checks right now.
pub fn apply(
    tracked: &mut Vec<Tracked>,
    answer: &NodesAnswer,
    seeds: &Seeds,
    roles: &RoleFilter,
    forget_after: u32,
    passing: impl Fn(&NodeId) -> bool,
) -> Vec<Change> {
    let mut changes = Vec::new();
    // a member the file now lists is a seed: neither absent nor left, just configured
    tracked.retain(|t| {
        let seed = seeds.ids.contains(&t.member.id) || seeds.addrs.contains(&t.member.publish.addr);
        if seed {
            changes.push(Change::Configured(t.member.clone()));
        }
        !seed
    });
    let mut listed = HashSet::new();
    for node in &answer.nodes {
        let is_seed = seeds.ids.contains(&node.id)
            || node
                .publish
                .as_ref()
                .is_some_and(|p| seeds.addrs.contains(&p.addr));
        if is_seed {
            continue;
        }
        let known = tracked.iter().position(|t| t.member.id == node.id);
        if let Err(why) = eligible(node, roles) {
            if let Some(i) = known {
                // the cluster itself says this node is no server now (new roles, HTTP off)
                let member = tracked.remove(i).member;
                changes.push(Change::Left { member, why });
            } else {
                changes.push(Change::Ignored {
                    id: node.id.clone(),
                    name: node.name.clone(),
                    why,
                });
            }
            continue;
        }
        listed.insert(node.id.clone());
        let publish = node.publish.clone().expect("eligible nodes publish HTTP");
        match known {
            Some(i) => {
                let t = &mut tracked[i];
                t.absent = 0;
                if t.member.publish.addr != publish.addr {
                    let from = std::mem::replace(&mut t.member.publish, publish);
                    changes.push(Change::Moved {
                        member: t.member.clone(),
                        from,
                    });
                } else {
                    t.member.publish = publish;
                }
            }
            None => {
                let member = Member {
                    id: node.id.clone(),
                    name: server_name(node, seeds),
                    publish,
                };
                changes.push(Change::Joined(member.clone()));
                tracked.push(Tracked { member, absent: 0 });
            }
        }
    }
    tracked.retain_mut(|t| {
        if listed.contains(&t.member.id) {
            return true;
        }
        // a member that did not answer in time is still a member: not absent
        if answer.failed.contains(&t.member.id) {
            t.absent = 0;
            return true;
        }
        t.absent = t.absent.saturating_add(1);
        if t.absent < forget_after || passing(&t.member.id) {
            return true;
        }
        changes.push(Change::Left {
            member: t.member.clone(),
            why: format!(
                "absent from {} answers in a row and failing its checks",
                t.absent
            ),
        });
        false
    });
    changes
}

/// Why a node the cluster lists cannot be a server of this backend, if it cannot.
fn eligible(node: &NodeInfo, roles: &RoleFilter) -> Result<(), String> {
    if node.publish.is_none() {
        return Err(
            "publishes no HTTP address (http disabled, or an address that cannot be read)".into(),
        );
    }
    match &node.roles {
        Some(r) => nodes::judge_roles(roles, r),
        None if roles.is_active() => Err("lists no roles".into()),
        None => Ok(()),
    }
}

/// The server name for a discovered node: its node name, made fit for metric labels and admin
/// URLs, and told apart from a configured server's name by its id.
fn server_name(node: &NodeInfo, seeds: &Seeds) -> Name {
    let mut name: String = node
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:-[]@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if name.is_empty() || seeds.names.contains(name.as_str()) {
        let short: String = node.id.0.chars().take(8).collect();
        name = format!("{name}@{short}");
    }
    Name::new(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn node(id: &str, name: &str, roles: &[&str], publish: Option<&str>) -> NodeInfo {
        NodeInfo {
            id: NodeId(id.into()),
            name: name.into(),
            roles: Some(roles.iter().map(|r| r.to_string()).collect()),
            publish: publish.map(|p| Publish {
                text: p.into(),
                addr: nodes::publish_addr(p).expect("an address"),
            }),
        }
    }

    fn answer(nodes: Vec<NodeInfo>) -> NodesAnswer {
        NodesAnswer {
            cluster_name: "prod".into(),
            nodes,
            failed: Vec::new(),
        }
    }

    fn default_roles() -> RoleFilter {
        RoleFilter {
            exclude_dedicated_masters: true,
            require: vec![],
        }
    }

    fn seed(addr: &str) -> Seeds {
        Seeds {
            names: HashSet::from([Name::new("seed")]),
            ids: HashSet::new(),
            addrs: HashSet::from([addr.parse().unwrap()]),
        }
    }

    fn names(tracked: &[Tracked]) -> Vec<&str> {
        tracked.iter().map(|t| &*t.member.name).collect()
    }

    #[test]
    fn data_nodes_join_masters_and_seeds_do_not() {
        let mut tracked = Vec::new();
        let a = answer(vec![
            node("s", "es-1", &["data", "master"], Some("10.0.0.1:9200")),
            node("b", "es-2", &["data", "ingest"], Some("es-2/10.0.0.2:9200")),
            node("m", "m-1", &["cluster_manager"], Some("10.0.0.9:9200")),
            node("n", "es-3", &["data"], None),
        ]);
        let changes = apply(
            &mut tracked,
            &a,
            &seed("10.0.0.1:9200"),
            &default_roles(),
            3,
            |_| true,
        );
        assert_eq!(names(&tracked), ["es-2"]);
        assert!(matches!(&changes[0], Change::Joined(m) if &*m.name == "es-2"));
        let ignored: Vec<(&str, &str)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Ignored { name, why, .. } => Some((name.as_str(), why.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            ignored,
            [
                (
                    "m-1",
                    "dedicated cluster-manager node: not a client entry point"
                ),
                (
                    "es-3",
                    "publishes no HTTP address (http disabled, or an address that cannot be read)"
                )
            ]
        );
    }

    #[test]
    fn a_seed_is_recognised_by_its_node_id_too() {
        let mut tracked = Vec::new();
        let seeds = Seeds {
            ids: HashSet::from([NodeId("s".into())]),
            ..Seeds::default()
        };
        let a = answer(vec![node("s", "es-1", &["data"], Some("172.17.0.2:9200"))]);
        apply(&mut tracked, &a, &seeds, &default_roles(), 3, |_| true);
        assert!(tracked.is_empty());
    }

    #[test]
    fn an_absent_node_leaves_only_after_the_absence_rule_and_failing_checks() {
        let mut tracked = Vec::new();
        let full = answer(vec![
            node("a", "es-2", &["data"], Some("10.0.0.2:9200")),
            node("b", "es-3", &["data"], Some("10.0.0.3:9200")),
        ]);
        let small = answer(vec![node("a", "es-2", &["data"], Some("10.0.0.2:9200"))]);
        let none = Seeds::default();
        apply(&mut tracked, &full, &none, &default_roles(), 3, |_| true);
        // es-3 still passes its checks: however many answers miss it, it stays
        for _ in 0..5 {
            let c = apply(&mut tracked, &small, &none, &default_roles(), 3, |_| true);
            assert!(c.is_empty(), "{c:?}");
        }
        assert_eq!(names(&tracked), ["es-2", "es-3"]);
        assert_eq!(tracked[1].absent, 5);
        // listed again: the count starts over
        apply(&mut tracked, &full, &none, &default_roles(), 3, |_| false);
        assert_eq!(tracked[1].absent, 0);
        // failing its checks, it leaves at the third answer without it, not before
        let failing = |id: &NodeId| id.0 != "b";
        for _ in 0..2 {
            assert!(apply(&mut tracked, &small, &none, &default_roles(), 3, failing).is_empty());
        }
        let c = apply(&mut tracked, &small, &none, &default_roles(), 3, failing);
        assert_eq!(names(&tracked), ["es-2"]);
        assert!(
            matches!(&c[..], [Change::Left { member, why }] if &*member.name == "es-3"
                && why == "absent from 3 answers in a row and failing its checks"),
            "{c:?}"
        );
    }

    #[test]
    fn a_member_that_did_not_answer_in_time_is_not_absent() {
        let mut tracked = Vec::new();
        let none = Seeds::default();
        let full = answer(vec![
            node("a", "es-2", &["data"], Some("10.0.0.2:9200")),
            node("b", "es-3", &["data"], Some("10.0.0.3:9200")),
        ]);
        let mut slow = answer(vec![node("a", "es-2", &["data"], Some("10.0.0.2:9200"))]);
        slow.failed = vec![NodeId("b".into())];
        apply(&mut tracked, &full, &none, &default_roles(), 1, |_| false);
        // failing its checks (paused), yet listed as failed: it stays, whatever forget_after
        for _ in 0..3 {
            assert!(apply(&mut tracked, &slow, &none, &default_roles(), 1, |_| false).is_empty());
        }
        assert_eq!(names(&tracked), ["es-2", "es-3"]);
    }

    #[test]
    fn a_node_at_a_new_address_keeps_its_identity() {
        let mut tracked = Vec::new();
        let none = Seeds::default();
        let before = answer(vec![node("a", "es-2", &["data"], Some("10.0.0.2:9200"))]);
        let after = answer(vec![node("a", "es-2", &["data"], Some("10.0.0.2:9201"))]);
        apply(&mut tracked, &before, &none, &default_roles(), 3, |_| true);
        let c = apply(&mut tracked, &after, &none, &default_roles(), 3, |_| true);
        assert_eq!(tracked.len(), 1);
        assert_eq!(
            tracked[0].member.publish.addr,
            "10.0.0.2:9201".parse().unwrap()
        );
        assert!(
            matches!(&c[..], [Change::Moved { member, from }] if member.id.0 == "a"
                && from.addr == "10.0.0.2:9200".parse().unwrap()),
            "{c:?}"
        );
    }

    #[test]
    fn a_member_written_into_the_file_is_configured_not_left() {
        let mut tracked = Vec::new();
        let a = answer(vec![
            node("s", "es-1", &["data"], Some("10.0.0.1:9200")),
            node("a", "es-2", &["data"], Some("10.0.0.2:9200")),
        ]);
        let one_seed = seed("10.0.0.1:9200");
        apply(&mut tracked, &a, &one_seed, &default_roles(), 1, |_| true);
        assert_eq!(names(&tracked), ["es-2"]);
        // a reload lists es-2 too; its own check knows it by the id the cluster gives it
        let mut two_seeds = seed("10.0.0.1:9200");
        two_seeds.ids.insert(NodeId("a".into()));
        let c = apply(&mut tracked, &a, &two_seeds, &default_roles(), 1, |_| false);
        assert!(tracked.is_empty());
        assert!(
            matches!(&c[..], [Change::Configured(m)] if &*m.name == "es-2"),
            "{c:?}"
        );
    }

    #[test]
    fn new_roles_that_fail_the_filter_take_a_member_out_at_once() {
        let mut tracked = Vec::new();
        let none = Seeds::default();
        let data = RoleFilter {
            exclude_dedicated_masters: true,
            require: vec![Role("data".into())],
        };
        let before = answer(vec![node("a", "es-2", &["data"], Some("10.0.0.2:9200"))]);
        let after = answer(vec![node("a", "es-2", &["ingest"], Some("10.0.0.2:9200"))]);
        apply(&mut tracked, &before, &none, &data, 3, |_| true);
        let c = apply(&mut tracked, &after, &none, &data, 3, |_| true);
        assert!(tracked.is_empty());
        assert!(matches!(&c[..], [Change::Left { .. }]), "{c:?}");
    }

    #[test]
    fn names_fit_for_labels_and_never_a_configured_name() {
        let seeds = Seeds {
            names: HashSet::from([Name::new("es-1")]),
            ..Seeds::default()
        };
        let n = node("abcdefghijk", "es-1", &["data"], Some("10.0.0.2:9200"));
        assert_eq!(&*server_name(&n, &seeds), "es-1@abcdefgh");
        let n = node("x", "node one/ä", &["data"], Some("10.0.0.2:9200"));
        assert_eq!(&*server_name(&n, &seeds), "node_one__");
    }
}
