//! The reload sequence (SIGHUP): read and validate the file, bind what is new, check new servers,
//! then swap the snapshot atomically. A file that fails any step changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Control, check_plans, first_round, not_local, start_listener};
use crate::admin;
use crate::config::{ConfigError, ConfigErrors};
use crate::listener;
use crate::resolve::prepare;
use crate::state::{self, LastReload, Rejection};

impl Control {
    /// Re-reads the file; applies it only if all of it is valid and every new listener binds.
    pub(super) async fn reload(&mut self) {
        self.notifier.reloading();
        tracing::info!(config = %self.path.display(), "reloading configuration");
        match self.try_reload().await {
            Ok(()) => {
                *self.shared.last_reload.lock().expect("reload record lock") = LastReload {
                    at: SystemTime::now(),
                    rejection: None,
                };
                self.shared.metrics.reload(true);
                tracing::info!(config = %self.path.display(), "configuration reloaded");
            }
            Err(errors) => {
                self.shared.metrics.reload(false);
                for e in &errors.0 {
                    tracing::error!(
                        "reload rejected, still serving the previous configuration: {e}"
                    );
                }
                let now = SystemTime::now();
                *self.shared.last_reload.lock().expect("reload record lock") = LastReload {
                    at: now,
                    rejection: Some(Rejection {
                        at: now,
                        reason: errors.summary(),
                    }),
                };
            }
        }
        let status = self.refresh_status();
        self.notifier.ready(&status);
    }

    async fn try_reload(&mut self) -> Result<(), ConfigErrors> {
        let prepared = prepare(&self.path).await?;
        let old_workers = self.workers.handles().len();
        if prepared.config.workers != old_workers {
            tracing::warn!(
                running = old_workers,
                configured = prepared.config.workers,
                "workers changes at the next restart, not on reload"
            );
        }
        if prepared.config.pin_workers != self.workers.pin() {
            tracing::warn!(
                running = self.workers.pin(),
                configured = prepared.config.pin_workers,
                "pin_workers changes at the next restart, not on reload"
            );
        }
        // Bind every new address before anything changes, so a failure leaves all as it was.
        let mut fresh = HashMap::new();
        for (i, l) in prepared.config.listeners.iter().enumerate() {
            if self.listeners.contains_key(&l.bind) {
                continue;
            }
            let b = listener::bind(l.bind, old_workers, l.freebind).map_err(|e| {
                ConfigErrors(vec![if listener::is_not_local(&e) {
                    not_local(&self.path, i, l.bind)
                } else {
                    ConfigError::Invalid {
                        file: self.path.clone(),
                        path: format!("listeners[{i}].bind"),
                        message: format!("cannot bind {}: {e}", l.bind),
                    }
                }])
            })?;
            fresh.insert(l.bind, b);
        }
        let old_admin = self.shared.running.load().config.admin.bind;
        let new_admin = prepared.config.admin.bind;
        let admin_socket = if new_admin == old_admin {
            None
        } else {
            Some(admin::bind(new_admin).map_err(|e| {
                ConfigErrors(vec![ConfigError::Invalid {
                    file: self.path.clone(),
                    path: "admin.bind".into(),
                    message: format!("cannot bind {new_admin}: {e}"),
                }])
            })?)
        };
        let mut locals: HashMap<SocketAddr, SocketAddr> =
            self.listeners.iter().map(|(k, a)| (*k, a.local)).collect();
        locals.extend(fresh.iter().map(|(k, b)| (*k, b.local)));
        let old = self.shared.running.load_full();
        let new = state::build(
            prepared,
            old.discovered.clone(),
            Some(&old),
            &locals,
            &self.shared.metrics,
            &self.shared.changes,
        );
        let removed: Vec<SocketAddr> = self
            .listeners
            .keys()
            .filter(|k| !new.routes.contains_key(k))
            .copied()
            .collect();
        // New servers are checked before the swap, so a reload that replaces every server of a
        // backend never leaves clients a moment with no server known to be up.
        self.supervisor.apply(check_plans(&new.backends));
        first_round(&self.shared, &new.backends).await;
        self.shared.running.store(Arc::new(new));
        self.discoverers.apply(&self.shared.running.load().backends);
        for (key, b) in fresh {
            let accepting = start_listener(b, key, &self.workers, &self.shared);
            self.listeners.insert(key, accepting);
        }
        if let Some(socket) = admin_socket {
            match admin::start(socket, self.shared.clone()) {
                Ok(a) => self.admin = a,
                Err(e) => {
                    tracing::error!(bind = %new_admin, error = %e, "cannot serve the admin endpoint at its new address; it stays where it was")
                }
            }
        }
        for key in removed {
            if let Some(a) = self.listeners.remove(&key) {
                a.close().await;
                tracing::info!(bind = %key, "stopped listening; open connections continue");
            }
        }
        self.retire(&old);
        Ok(())
    }
}
