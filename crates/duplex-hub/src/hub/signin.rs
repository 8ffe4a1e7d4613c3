//! `pusher:signin`: the user authentication is verified, the connection is tied to one user
//! id (for good: signing in again as another user is refused) and the broker learns the
//! user's socket, so the REST API can terminate the user's connections.

use super::local::Subscriber;
use super::{Hub, HubError};
use crate::auth;
use crate::config::App;
use crate::protocol::{self, codes, ServerMessage, Signin};
use crate::socket_id::SocketId;

impl Hub {
    pub(super) async fn signin(
        &self,
        socket: &SocketId,
        app: &App,
        sub: &Subscriber,
        s: Signin,
    ) -> Result<(), HubError> {
        if let Err(e) = auth::verify_user_auth(
            &app.key,
            &app.secret,
            socket.as_str(),
            &s.user_data,
            &s.auth,
        ) {
            self.send_error(
                sub,
                Some(codes::UNAUTHORIZED),
                &format!("Invalid signin: {e}"),
            );
            return Ok(());
        }
        let user_id = match serde_json::from_str::<serde_json::Value>(&s.user_data) {
            Ok(serde_json::Value::Object(o)) => match o.get("id") {
                Some(serde_json::Value::String(id))
                    if !id.is_empty() && id.chars().count() <= protocol::MAX_USER_ID_LEN =>
                {
                    id.clone()
                }
                _ => {
                    self.send_error(
                        sub,
                        Some(codes::UNAUTHORIZED),
                        "Invalid signin: user_data.id must be a non-empty string",
                    );
                    return Ok(());
                }
            },
            _ => {
                self.send_error(
                    sub,
                    Some(codes::UNAUTHORIZED),
                    "Invalid signin: user_data must be a JSON object",
                );
                return Ok(());
            }
        };
        let previous = {
            let mut conns = self.inner.local.conns();
            let conn = conns
                .get_mut(socket)
                .ok_or_else(|| HubError::UnknownSocket(socket.clone()))?;
            match &conn.user_id {
                Some(existing) if *existing != user_id => Err(existing.clone()),
                Some(_) => Ok(true),
                None => {
                    conn.user_id = Some(user_id.clone());
                    Ok(false)
                }
            }
        };
        match previous {
            Err(_) => {
                self.send_error(
                    sub,
                    Some(codes::UNAUTHORIZED),
                    "Invalid signin: this connection is already signed in as another user",
                );
                return Ok(());
            }
            Ok(false) => {
                self.inner
                    .broker
                    .user_add_socket(&app.id, &user_id, socket)
                    .await?;
            }
            Ok(true) => {}
        }
        self.inner.local.send(
            sub,
            ServerMessage::SigninSuccess {
                user_data: &s.user_data,
            }
            .to_bytes(),
        );
        Ok(())
    }
}
