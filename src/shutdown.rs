//! The one shutdown signal: SIGINT or SIGTERM, fanned out as a [`CancellationToken`].
//!
//! Owns only the waiting for the signal; what each part does when it fires is that
//! part's business (streams close with 1001, the writer commits its queue).

use tokio_util::sync::CancellationToken;

/// Listeners for SIGINT and SIGTERM, registered when made. Make them before start-up
/// work: a signal that arrives while the server is still starting (opening the store,
/// replaying the log) is then kept and answered with a clean shutdown, instead of
/// killing the process by the signal's default action.
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the listeners.
    ///
    /// # Errors
    /// The signal handlers could not be installed.
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
            _ = self.terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }

    /// Cancels `token` when the process is told to stop (or returns once it is
    /// cancelled otherwise).
    pub async fn cancel_on_signal(mut self, token: CancellationToken) {
        tokio::select! {
            () = self.recv() => token.cancel(),
            () = token.cancelled() => {}
        }
    }
}
