//! What this node holds, kept in memory: the truth from which its contributions in Redis are
//! derived and, after Redis lost them (restart, failover) or reaped them (lease expired while
//! unreachable), re-registered.
//!
//! Every method updates the mirror and says which contribution fields changed and by how much;
//! the broker then applies those deltas in Redis. If that fails, nothing is lost: the next
//! [`Mirror::contributions`] snapshot still holds the truth, and a resync applies the difference.

use std::collections::{HashMap, HashSet};

use duplex_hub::protocol::PresenceMember;
use duplex_hub::socket_id::SocketId;

/// Separates the parts of a contribution field.
pub const SEP: char = '\x1f';

/// One change to a contribution field: `(field, delta, member info for presence joins)`.
pub type Delta = (String, i64, String);

/// A subscription-count field.
pub fn sub_field(app: &str, channel: &str) -> String {
    format!("s{SEP}{app}{SEP}{channel}")
}

/// A presence-user field.
pub fn presence_field(app: &str, channel: &str, user: &str) -> String {
    format!("p{SEP}{app}{SEP}{channel}{SEP}{user}")
}

/// A connection-count field.
pub fn conn_field(app: &str) -> String {
    format!("c{SEP}{app}")
}

/// A signed-in socket field.
pub fn user_field(app: &str, socket: &SocketId, user: &str) -> String {
    format!("u{SEP}{app}{SEP}{}{SEP}{user}", socket.as_str())
}

/// The JSON kept for a member (its `user_info`, or empty).
pub fn member_info(m: &PresenceMember) -> String {
    m.user_info
        .as_ref()
        .map(|r| r.get().to_owned())
        .unwrap_or_default()
}

type Key = (String, String);

/// This node's connections, subscriptions, presence sockets and signed-in users.
#[derive(Default)]
pub struct Mirror {
    connections: HashMap<String, u64>,
    subscriptions: HashMap<Key, HashSet<SocketId>>,
    presence: HashMap<Key, HashMap<SocketId, PresenceMember>>,
    users: HashMap<Key, HashSet<SocketId>>,
}

impl Mirror {
    /// Counts a connection of `app`.
    pub fn add_connection(&mut self, app: &str) -> Delta {
        *self.connections.entry(app.to_owned()).or_default() += 1;
        (conn_field(app), 1, String::new())
    }

    /// Forgets a connection of `app`; `None` if it had none.
    pub fn remove_connection(&mut self, app: &str) -> Option<Delta> {
        let n = self.connections.get_mut(app)?;
        *n -= 1;
        if *n == 0 {
            self.connections.remove(app);
        }
        Some((conn_field(app), -1, String::new()))
    }

    /// Records a subscription; `None` if the socket already had it.
    pub fn add_subscription(&mut self, app: &str, channel: &str, s: &SocketId) -> Option<Delta> {
        let set = self
            .subscriptions
            .entry((app.to_owned(), channel.to_owned()))
            .or_default();
        set.insert(s.clone())
            .then(|| (sub_field(app, channel), 1, String::new()))
    }

    /// Forgets a subscription; `None` if the socket did not have it.
    pub fn remove_subscription(&mut self, app: &str, channel: &str, s: &SocketId) -> Option<Delta> {
        let key = (app.to_owned(), channel.to_owned());
        let set = self.subscriptions.get_mut(&key)?;
        if !set.remove(s) {
            return None;
        }
        if set.is_empty() {
            self.subscriptions.remove(&key);
        }
        Some((sub_field(app, channel), -1, String::new()))
    }

    /// Adds a presence socket; a delta only when it is the user's first socket here.
    pub fn presence_add(
        &mut self,
        app: &str,
        channel: &str,
        s: &SocketId,
        member: PresenceMember,
    ) -> Option<Delta> {
        let sockets = self
            .presence
            .entry((app.to_owned(), channel.to_owned()))
            .or_default();
        if sockets.contains_key(s) {
            // The same socket joining again (the hub never does): nothing changes.
            return None;
        }
        let first = !sockets.values().any(|m| m.user_id == member.user_id);
        let field = presence_field(app, channel, &member.user_id);
        let info = member_info(&member);
        sockets.insert(s.clone(), member);
        first.then_some((field, 1, info))
    }

    /// Removes a presence socket: the user it was, whether that was the user's last socket
    /// here, and the delta in that case. `None` if the socket was not in the channel.
    pub fn presence_remove(
        &mut self,
        app: &str,
        channel: &str,
        s: &SocketId,
    ) -> Option<(String, Option<Delta>)> {
        let key = (app.to_owned(), channel.to_owned());
        let sockets = self.presence.get_mut(&key)?;
        let member = sockets.remove(s)?;
        let last = !sockets.values().any(|m| m.user_id == member.user_id);
        if sockets.is_empty() {
            self.presence.remove(&key);
        }
        let delta = last.then(|| {
            (
                presence_field(app, channel, &member.user_id),
                -1,
                String::new(),
            )
        });
        Some((member.user_id, delta))
    }

    /// Records a signed-in socket; `None` if already recorded.
    pub fn user_add(&mut self, app: &str, user: &str, s: &SocketId) -> Option<Delta> {
        let set = self
            .users
            .entry((app.to_owned(), user.to_owned()))
            .or_default();
        set.insert(s.clone())
            .then(|| (user_field(app, s, user), 1, String::new()))
    }

    /// Forgets a signed-in socket; `None` if it was not recorded.
    pub fn user_remove(&mut self, app: &str, user: &str, s: &SocketId) -> Option<Delta> {
        let key = (app.to_owned(), user.to_owned());
        let set = self.users.get_mut(&key)?;
        if !set.remove(s) {
            return None;
        }
        if set.is_empty() {
            self.users.remove(&key);
        }
        Some((user_field(app, s, user), -1, String::new()))
    }

    /// Every contribution field this node should have in Redis, with its value and (for
    /// presence) the member info.
    pub fn contributions(&self) -> HashMap<String, (i64, String)> {
        let mut out = HashMap::new();
        for (app, n) in &self.connections {
            out.insert(conn_field(app), (*n as i64, String::new()));
        }
        for ((app, channel), set) in &self.subscriptions {
            out.insert(sub_field(app, channel), (set.len() as i64, String::new()));
        }
        for ((app, channel), sockets) in &self.presence {
            // Sockets in id order, so the info registered for a user is stable.
            let mut by_socket: Vec<_> = sockets.iter().collect();
            by_socket.sort_by(|a, b| a.0.cmp(b.0));
            for (_, m) in by_socket {
                out.entry(presence_field(app, channel, &m.user_id))
                    .or_insert_with(|| (1, member_info(m)));
            }
        }
        for ((app, user), set) in &self.users {
            for s in set {
                out.insert(user_field(app, s, user), (1, String::new()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_hub::protocol::parse_channel_data;

    fn sid(s: &str) -> SocketId {
        SocketId::parse(s).expect("valid")
    }

    fn member(u: &str) -> PresenceMember {
        parse_channel_data(&format!(r#"{{"user_id":"{u}","user_info":{{"n":1}}}}"#)).expect("valid")
    }

    #[test]
    fn presence_deltas_only_for_first_and_last_socket_of_a_user() {
        let mut m = Mirror::default();
        assert!(m
            .presence_add("a", "presence-c", &sid("1.1"), member("u"))
            .is_some());
        assert!(m
            .presence_add("a", "presence-c", &sid("1.2"), member("u"))
            .is_none());
        let (user, d) = m
            .presence_remove("a", "presence-c", &sid("1.1"))
            .expect("was in");
        assert_eq!((user.as_str(), d), ("u", None));
        let (_, d) = m
            .presence_remove("a", "presence-c", &sid("1.2"))
            .expect("was in");
        assert_eq!(d.map(|d| d.1), Some(-1));
        assert!(m.presence_remove("a", "presence-c", &sid("1.2")).is_none());
    }

    #[test]
    fn contributions_sum_what_the_node_holds() {
        let mut m = Mirror::default();
        m.add_connection("a");
        m.add_connection("a");
        m.add_subscription("a", "news", &sid("1.1"));
        m.add_subscription("a", "news", &sid("1.2"));
        m.add_subscription("a", "news", &sid("1.2"));
        m.presence_add("a", "presence-c", &sid("1.1"), member("u"));
        m.presence_add("a", "presence-c", &sid("1.2"), member("u"));
        m.user_add("a", "u", &sid("1.1"));
        let c = m.contributions();
        assert_eq!(c[&conn_field("a")].0, 2);
        assert_eq!(c[&sub_field("a", "news")].0, 2);
        assert_eq!(
            c[&presence_field("a", "presence-c", "u")],
            (1, r#"{"n":1}"#.to_string())
        );
        assert_eq!(c[&user_field("a", &sid("1.1"), "u")].0, 1);
        assert_eq!(c.len(), 4);
        m.remove_connection("a");
        m.remove_connection("a");
        assert!(m.remove_connection("a").is_none());
        assert_eq!(m.contributions().len(), 3);
    }
}
