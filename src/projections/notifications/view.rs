//! What each reader may see of a notification, decided in one place for every path (history,
//! SSE, WebSocket, the realtime hub's buffer). *Which rows* a user sees is `VISIBLE_TO` /
//! [`NotificationRow::visible_to`]; *which fields* of a row they see is decided here: the
//! sender's private fields (the `email` the gateway copies from the sender's JWT) are shown to
//! the sender (the row's `user_id`) and to admins only — not to the other users who see a
//! broadcast, nor to the recipient of a direct message (least privilege).

use std::borrow::Cow;

use super::NotificationRow;

/// Payload fields only the sender and admins may see.
pub const SENDER_ONLY_FIELDS: &[&str] = &["email"];

/// Who reads notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub user: String,
    /// Admins see the sender's private fields of every row they may see.
    pub admin: bool,
}

impl Viewer {
    pub fn new(user: impl Into<String>, admin: bool) -> Self {
        Self {
            user: user.into(),
            admin,
        }
    }
}

impl NotificationRow {
    /// Whether `viewer` may see the sender's private fields of this row.
    pub fn shows_sender_fields_to(&self, viewer: &Viewer) -> bool {
        viewer.admin || self.user_id == viewer.user
    }

    /// The row as everyone but the sender and admins sees it, or `None` when it has no
    /// sender-only field (then everyone sees the same row).
    pub fn without_sender_fields(&self) -> Option<NotificationRow> {
        let obj = self.payload.as_object()?;
        if !SENDER_ONLY_FIELDS.iter().any(|f| obj.contains_key(*f)) {
            return None;
        }
        let mut row = self.clone();
        if let Some(obj) = row.payload.as_object_mut() {
            for f in SENDER_ONLY_FIELDS {
                obj.remove(*f);
            }
        }
        Some(row)
    }

    /// The row as `viewer` may see it.
    pub fn view_for(&self, viewer: &Viewer) -> Cow<'_, NotificationRow> {
        if self.shows_sender_fields_to(viewer) {
            return Cow::Borrowed(self);
        }
        match self.without_sender_fields() {
            Some(r) => Cow::Owned(r),
            None => Cow::Borrowed(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(user: &str, visibility: &str, recipient: Option<&str>) -> NotificationRow {
        NotificationRow {
            id: 1,
            event_id: "e1".into(),
            user_id: user.into(),
            event_type: "user.message".into(),
            payload: json!({ "user_id": user, "email": format!("{user}@example.com"), "message": "hi" }),
            visibility: visibility.into(),
            recipient_id: recipient.map(str::to_string),
            event_time: 0,
        }
    }

    #[test]
    fn the_senders_email_is_for_the_sender_and_admins() {
        let b = row("alice", "broadcast", None);
        let alice = b.view_for(&Viewer::new("alice", false));
        assert_eq!(alice.payload["email"], "alice@example.com");
        let admin = b.view_for(&Viewer::new("ops", true));
        assert_eq!(admin.payload["email"], "alice@example.com");
        let bob = b.view_for(&Viewer::new("bob", false));
        assert!(bob.payload.get("email").is_none(), "{:?}", bob.payload);
        assert_eq!(bob.payload["message"], "hi");
        // A direct message: not even its recipient sees the sender's email.
        let d = row("alice", "direct", Some("bob"));
        let bob = d.view_for(&Viewer::new("bob", false));
        assert!(bob.payload.get("email").is_none());
        // Rows without private fields are shared as they are.
        let mut plain = row("alice", "broadcast", None);
        plain.payload = json!({ "message": "hi" });
        assert!(plain.without_sender_fields().is_none());
        assert!(matches!(
            plain.view_for(&Viewer::new("bob", false)),
            Cow::Borrowed(_)
        ));
    }
}
