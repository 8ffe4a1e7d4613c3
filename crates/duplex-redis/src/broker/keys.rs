//! Every Redis key and pub/sub channel name a node uses, under the configured prefix: the one
//! place that spells them.

/// Key and channel names under the prefix.
pub(super) struct Keys {
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    pub(super) fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }
    pub(super) fn node(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }
    pub(super) fn app(&self, app: &str, rest: &str) -> String {
        format!("{}:app:{app}:{rest}", self.prefix)
    }
    pub(super) fn events(&self, app: &str, channel: &str) -> String {
        self.app(app, &format!("ev:{channel}"))
    }
    pub(super) fn history(&self, app: &str, channel: &str) -> (String, String) {
        (
            self.app(app, &format!("history:{channel}")),
            self.app(app, &format!("history-meta:{channel}")),
        )
    }
    pub(super) fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }
}
