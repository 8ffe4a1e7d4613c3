//! Subscriptions: a `pusher:subscribe` is checked (name, auth, `channel_data`, limits),
//! registered locally first and then with the broker (routing, counts, presence, webhooks),
//! and confirmed (members, history position and recovered events, cached event) ahead of
//! anything held back meanwhile. Refusals are answered twice. And the way out again:
//! unsubscribing, and leaving every channel on disconnect.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use super::local::{lock_held, ChannelSub, Held, Subscriber};
use super::{Hub, HubError};
use crate::auth;
use crate::channel::{self, ChannelKind};
use crate::config::App;
use crate::protocol::{self, ServerMessage, Subscribe};
use crate::socket_id::SocketId;
use crate::webhooks::WebhookEvent;

/// Why a `pusher:subscribe` was refused, in the shape pusher-js uses for its own
/// subscription errors (`{type, error, status}`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubscribeRefusal {
    kind: &'static str,
    status: u16,
    message: String,
}

impl SubscribeRefusal {
    /// Missing or wrong signature, or a server-to-user channel of another user: 401.
    fn auth(message: String) -> Self {
        SubscribeRefusal {
            kind: "AuthError",
            status: 401,
            message,
        }
    }

    /// A bad channel name or `channel_data`: 400.
    fn invalid(message: String) -> Self {
        SubscribeRefusal {
            kind: "SubscriptionError",
            status: 400,
            message,
        }
    }

    /// A limit (channels per connection, presence members): 403.
    fn limit(message: String) -> Self {
        SubscribeRefusal {
            kind: "SubscriptionError",
            status: 403,
            message,
        }
    }
}

impl Hub {
    /// Answers a refused `pusher:subscribe` twice: a `pusher:error` with code `null` and the
    /// reason (what Pusher sends; pusher-js emits it as a connection `error`), then a
    /// `pusher:subscription_error` on the channel (pusher-js emits it on the channel object,
    /// where apps and Laravel Echo's `.error()` listen).
    fn refuse_subscription(&self, sub: &Subscriber, channel: &str, refusal: &SubscribeRefusal) {
        self.send_error(sub, None, &refusal.message);
        self.inner.local.send(
            sub,
            ServerMessage::SubscriptionError {
                channel,
                kind: refusal.kind,
                error: &refusal.message,
                status: refusal.status,
            }
            .to_bytes(),
        );
    }

    /// Pure checks of a subscription request (no state changes).
    fn check_subscribe(
        &self,
        socket: &SocketId,
        app: &App,
        s: &Subscribe,
        signed_in_as: Option<&str>,
    ) -> Result<Option<protocol::PresenceMember>, SubscribeRefusal> {
        channel::validate(&s.channel)
            .map_err(|e| SubscribeRefusal::invalid(format!("Invalid channel name: {e}")))?;
        let kind = ChannelKind::of(&s.channel);
        match kind {
            ChannelKind::ServerToUser => {
                let owner = channel::server_to_user_id(&s.channel);
                if owner.is_none() || owner != signed_in_as {
                    return Err(SubscribeRefusal::auth(format!(
                        "Subscription to {} requires signing in as that user",
                        s.channel
                    )));
                }
                Ok(None)
            }
            ChannelKind::Public => Ok(None),
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence => {
                let unauthorized = |why: String| {
                    SubscribeRefusal::auth(format!(
                        "Unauthorized subscription to {}: {why}",
                        s.channel
                    ))
                };
                let auth = s
                    .auth
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| unauthorized("missing auth".into()))?;
                let channel_data = if kind == ChannelKind::Presence {
                    Some(s.channel_data.as_deref().ok_or_else(|| {
                        unauthorized("presence channels need channel_data".into())
                    })?)
                } else {
                    None
                };
                auth::verify_channel_auth(
                    &app.key,
                    &app.secret,
                    socket.as_str(),
                    &s.channel,
                    channel_data,
                    auth,
                )
                .map_err(|e| unauthorized(e.to_string()))?;
                match channel_data {
                    None => Ok(None),
                    Some(cd) => {
                        if cd.len() > app.max_presence_member_size {
                            return Err(SubscribeRefusal::invalid(format!(
                                "Presence channel_data is larger than {} bytes",
                                app.max_presence_member_size
                            )));
                        }
                        protocol::parse_channel_data(cd).map(Some).map_err(|e| {
                            SubscribeRefusal::invalid(format!("Invalid channel_data: {e}"))
                        })
                    }
                }
            }
        }
    }

    pub(super) async fn subscribe(
        &self,
        socket: &SocketId,
        app: &Arc<App>,
        sub: &Subscriber,
        s: Subscribe,
    ) -> Result<(), HubError> {
        let (already, count, signed_in_as) = {
            let conns = self.inner.local.conns();
            let conn = conns
                .get(socket)
                .ok_or_else(|| HubError::UnknownSocket(socket.clone()))?;
            (
                conn.channels.contains_key(&s.channel),
                conn.channels.len(),
                conn.user_id.clone(),
            )
        };
        let recover = match &s.recover {
            None => None,
            Some(Ok(p)) => Some(p.clone()),
            Some(Err(why)) => {
                let refusal = SubscribeRefusal::invalid(format!("Invalid recover: {why}"));
                self.refuse_subscription(sub, &s.channel, &refusal);
                return Ok(());
            }
        };
        let member = match self.check_subscribe(socket, app, &s, signed_in_as.as_deref()) {
            Ok(m) => m,
            Err(refusal) => {
                self.refuse_subscription(sub, &s.channel, &refusal);
                return Ok(());
            }
        };
        let broker = &self.inner.broker;
        let channel = s.channel.as_str();
        if already {
            // Idempotent: confirm again without counting twice.
            return self
                .confirm_subscription(app, sub, channel, member.is_some(), None, None)
                .await;
        }
        if count >= app.max_channels_per_connection {
            let refusal = SubscribeRefusal::limit(format!(
                "Too many channels: at most {} per connection",
                app.max_channels_per_connection
            ));
            self.refuse_subscription(sub, channel, &refusal);
            return Ok(());
        }
        if let Some(m) = &member {
            let users = broker.presence_user_count(&app.id, channel).await?;
            if users >= app.max_presence_members as u64
                && !broker
                    .presence_has_user(&app.id, channel, &m.user_id)
                    .await?
            {
                let refusal = SubscribeRefusal::limit(format!(
                    "Presence channel {channel} is full: at most {} members",
                    app.max_presence_members
                ));
                self.refuse_subscription(sub, channel, &refusal);
                return Ok(());
            }
        }

        // Local registration first, so nothing published from here on is missed.
        {
            let mut conns = self.inner.local.conns();
            let Some(conn) = conns.get_mut(socket) else {
                return Err(HubError::UnknownSocket(socket.clone()));
            };
            conn.channels.insert(
                s.channel.clone(),
                member.as_ref().map(|m| m.user_id.clone()),
            );
        }
        let held = Arc::new(Mutex::new(Held::default()));
        let first_local = {
            let mut channels = self
                .inner
                .local
                .channels
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let subs = channels
                .entry(app.id.clone())
                .or_default()
                .entry(s.channel.clone())
                .or_default();
            subs.insert(
                socket.clone(),
                ChannelSub {
                    sub: sub.clone(),
                    held: Some(held.clone()),
                },
            );
            subs.len() == 1
        };
        self.inner
            .metrics
            .subscriptions_current
            .fetch_add(1, Relaxed);
        let mut counted = false;
        let joined = self
            .join_shared(
                socket,
                app,
                sub,
                channel,
                member.as_ref(),
                first_local,
                &held,
                recover.as_ref(),
                &mut counted,
            )
            .await;
        if let Err(e) = joined {
            // The broker failed (in a cluster: Redis unreachable). Undo, and tell the client:
            // a subscription that the cluster does not know would miss events silently.
            tracing::warn!(%socket, channel, "subscription refused: {e}");
            if let Some(conn) = self.inner.local.conns().get_mut(socket) {
                conn.channels.remove(channel);
            }
            if counted {
                let _ = self
                    .leave_channel(socket, app, channel, member.is_some())
                    .await;
            } else {
                self.unroute(socket, app, channel).await;
            }
            self.refuse_subscription(
                sub,
                channel,
                &SubscribeRefusal {
                    kind: "SubscriptionError",
                    status: 503,
                    message: format!(
                        "Subscription to {channel} failed: the cluster's shared state is unavailable, retry later"
                    ),
                },
            );
        }
        Ok(())
    }

    /// The shared half of a subscription: routing, counts, presence, then the confirmation.
    /// Sets `counted` once the broker counted the subscription.
    #[allow(clippy::too_many_arguments)]
    async fn join_shared(
        &self,
        socket: &SocketId,
        app: &App,
        sub: &Subscriber,
        channel: &str,
        member: Option<&protocol::PresenceMember>,
        first_local: bool,
        held: &Arc<Mutex<Held>>,
        recover: Option<&protocol::Position>,
        counted: &mut bool,
    ) -> Result<(), HubError> {
        let broker = &self.inner.broker;
        if first_local {
            broker
                .subscribe_node(self.inner.node, &app.id, channel)
                .await?;
        }
        let count = broker.add_subscription(&app.id, channel, socket).await?;
        *counted = true;
        let by_broker = broker.handles_transitions();
        if count == 1 && !by_broker {
            self.webhook(
                app,
                WebhookEvent::ChannelOccupied {
                    channel: channel.to_owned(),
                },
            );
        }
        if let Some(m) = member {
            let is_new_user = broker
                .presence_add(&app.id, channel, socket, m.clone())
                .await?;
            if is_new_user && !by_broker {
                let payload = ServerMessage::MemberAdded { channel, member: m }.to_bytes();
                broker
                    .publish(&app.id, channel, payload, Some(socket.clone()))
                    .await?;
                self.webhook(
                    app,
                    WebhookEvent::MemberAdded {
                        channel: channel.to_owned(),
                        user_id: m.user_id.clone(),
                    },
                );
            }
        }
        self.confirm_subscription(app, sub, channel, member.is_some(), Some(held), recover)
            .await?;
        self.release(socket, app, channel, held);
        Ok(())
    }

    /// Delivers to the subscriber without holding from now on (the confirmation is queued).
    fn release(&self, socket: &SocketId, app: &App, channel: &str, held: &Arc<Mutex<Held>>) {
        let mut channels = self
            .inner
            .local
            .channels
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(cs) = channels
            .get_mut(app.id.as_str())
            .and_then(|c| c.get_mut(channel))
            .and_then(|subs| subs.get_mut(socket))
        {
            if cs.held.as_ref().is_some_and(|h| Arc::ptr_eq(h, held)) {
                cs.held = None;
            }
        }
    }

    /// Sends `subscription_succeeded` (with members for presence; with the position on
    /// history channels, and whether `recover` succeeded), then on history channels the
    /// recovered events, then on cache channels the cached event or `pusher:cache_miss`, then
    /// whatever `held` kept meanwhile (without what the recovery already replayed).
    async fn confirm_subscription(
        &self,
        app: &App,
        sub: &Subscriber,
        channel: &str,
        presence: bool,
        held: Option<&Arc<Mutex<Held>>>,
        recover: Option<&protocol::Position>,
    ) -> Result<(), HubError> {
        let broker = &self.inner.broker;
        let local = &self.inner.local;
        let members = if presence {
            Some(broker.presence_members(&app.id, channel).await?)
        } else {
            None
        };
        let mut first = Vec::with_capacity(2);
        let mut replayed_upto = None;
        match (app.history_for(channel), recover) {
            (Some(h), _) => {
                let read = broker
                    .history(
                        &app.id,
                        channel,
                        recover.map(|r| r.offset),
                        h.size,
                        h.into(),
                    )
                    .await?;
                let recovered = recover.map(|r| read.complete && r.epoch == read.position.epoch);
                first.push(
                    ServerMessage::HistorySubscriptionSucceeded {
                        channel,
                        members: members.as_deref(),
                        position: Some(&read.position),
                        recovered,
                    }
                    .to_bytes(),
                );
                if recovered == Some(true) {
                    first.extend(read.events);
                    replayed_upto = Some(read.position.offset);
                }
            }
            (None, Some(_)) => first.push(
                ServerMessage::HistorySubscriptionSucceeded {
                    channel,
                    members: members.as_deref(),
                    position: None,
                    recovered: Some(false),
                }
                .to_bytes(),
            ),
            (None, None) => first.push(match &members {
                Some(members) => {
                    ServerMessage::PresenceSubscriptionSucceeded { channel, members }.to_bytes()
                }
                None => ServerMessage::SubscriptionSucceeded { channel }.to_bytes(),
            }),
        }
        if channel::is_cache(channel) {
            match broker.cache_get(&app.id, channel).await? {
                Some((payload, _ttl)) => first.push(payload),
                None => {
                    first.push(ServerMessage::CacheMiss { channel }.to_bytes());
                    self.webhook(
                        app,
                        WebhookEvent::CacheMiss {
                            channel: channel.to_owned(),
                        },
                    );
                }
            }
        }
        // The confirmation first, then what was held back for it, under the hold's lock so no
        // delivery slips in between.
        let mut h = held.map(|h| lock_held(h));
        for payload in first {
            local.send(sub, payload);
        }
        if let Some(h) = h.as_mut() {
            for payload in h.items.drain(..) {
                // Delivered live while the history was read: already replayed.
                let replayed = replayed_upto.is_some_and(|upto| {
                    protocol::position_offset(&payload).is_some_and(|o| o <= upto)
                });
                if !replayed {
                    local.send(sub, payload);
                }
            }
            h.released = true;
        }
        Ok(())
    }

    pub(super) async fn unsubscribe(
        &self,
        socket: &SocketId,
        channel: &str,
    ) -> Result<(), HubError> {
        let (app, was) = {
            let mut conns = self.inner.local.conns();
            let conn = conns
                .get_mut(socket)
                .ok_or_else(|| HubError::UnknownSocket(socket.clone()))?;
            (conn.app.clone(), conn.channels.remove(channel))
        };
        match was {
            // Unsubscribing from a channel one is not in is a no-op, as with Pusher.
            None => Ok(()),
            Some(presence_user) => {
                self.leave_channel(socket, &app, channel, presence_user.is_some())
                    .await
            }
        }
    }

    /// Removes `socket` from the local subscribers of `channel` (and the node's broker route
    /// when it was the last). Returns whether it was the last.
    pub(super) async fn unroute(&self, socket: &SocketId, app: &App, channel: &str) -> bool {
        let last_local = {
            let mut channels = self
                .inner
                .local
                .channels
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let mut last = false;
            let mut removed = false;
            if let Some(app_channels) = channels.get_mut(app.id.as_str()) {
                if let Some(subs) = app_channels.get_mut(channel) {
                    removed = subs.remove(socket).is_some();
                    if subs.is_empty() {
                        app_channels.remove(channel);
                        last = true;
                    }
                }
                if app_channels.is_empty() {
                    channels.remove(app.id.as_str());
                }
            }
            if removed {
                self.inner
                    .metrics
                    .subscriptions_current
                    .fetch_sub(1, Relaxed);
            }
            last
        };
        if last_local {
            if let Err(e) = self
                .inner
                .broker
                .unsubscribe_node(self.inner.node, &app.id, channel)
                .await
            {
                tracing::debug!(channel, "unsubscribe_node: {e}");
            }
        }
        last_local
    }

    pub(super) async fn leave_channel(
        &self,
        socket: &SocketId,
        app: &App,
        channel: &str,
        presence: bool,
    ) -> Result<(), HubError> {
        self.unroute(socket, app, channel).await;
        let broker = &self.inner.broker;
        let by_broker = broker.handles_transitions();
        if presence {
            if let Some(leave) = broker.presence_remove(&app.id, channel, socket).await? {
                if leave.user_left && !by_broker {
                    let payload = ServerMessage::MemberRemoved {
                        channel,
                        user_id: &leave.user_id,
                    }
                    .to_bytes();
                    broker.publish(&app.id, channel, payload, None).await?;
                    self.webhook(
                        app,
                        WebhookEvent::MemberRemoved {
                            channel: channel.to_owned(),
                            user_id: leave.user_id,
                        },
                    );
                }
            }
        }
        if broker.remove_subscription(&app.id, channel, socket).await? == 0 && !by_broker {
            self.webhook(
                app,
                WebhookEvent::ChannelVacated {
                    channel: channel.to_owned(),
                },
            );
        }
        Ok(())
    }
}
