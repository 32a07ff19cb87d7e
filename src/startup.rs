//! Application: the only place where the parts are wired together. Opens and migrates the
//! database, loads the graphs, starts the actors, binds the listener and builds the HTTP server.
//! Must be called inside an actix System.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use actix_web::dev::Server;
use actix_web::http::{KeepAlive, StatusCode};
use actix_web::middleware::{from_fn, ErrorHandlers, Logger};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::actors::{GetThread, RunLimits, Runtime, Shutdown, ThreadRegistry, ThreadSettings};
use crate::config::Settings;
pub use crate::engine::toml::node::NativeNodes;
use crate::engine::toml::{GraphRegistry, TomlEngine};
use crate::engine::Engines;
use crate::http::{self, AppState};
use crate::storage::sqlite::SqliteStore;
use crate::storage::SharedStore;
use crate::stream::StreamHub;

/// A built server, bound to its port, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    registry: Addr<ThreadRegistry>,
    /// Raised at shutdown: runs are refused and none starts.
    draining: Arc<AtomicBool>,
    grace: Duration,
    /// Kept so the actor threads live as long as the application.
    _arbiters: Vec<Arbiter>,
}

/// Pending connections the kernel queues before the server accepts them.
const LISTEN_BACKLOG: u32 = 4096;

fn threads_or_cpus(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(2, usize::from)
    }
}

impl Application {
    /// Builds the application from settings; `native` holds Rust node functions graphs may use.
    pub async fn build(settings: Settings, native: NativeNodes) -> anyhow::Result<Application> {
        let toml_graphs =
            GraphRegistry::load(&settings.graphs.files, &settings.config_dir, &native)
                .context("cannot load the graphs")?;
        let mut engines = Engines::default();
        engines
            .add(Arc::new(TomlEngine::new(toml_graphs)))
            .map_err(anyhow::Error::msg)?;
        let graph_ids: Vec<String> = engines.ids().map(str::to_owned).collect();
        log::info!("graphs loaded graphs={}", graph_ids.join(","));
        let engines = Arc::new(engines);

        let database = &settings.database;
        let store: SharedStore = Arc::new(
            SqliteStore::open(
                &database.path,
                database.readers,
                Duration::from_millis(database.busy_timeout_ms),
                (database.max_size_mb > 0).then(|| database.max_size_mb * 1024 * 1024),
            )
            .with_context(|| format!("cannot open the database {}", database.path.display()))?,
        );
        log::info!(
            "database ready path={} readers={}",
            database.path.display(),
            database.readers
        );
        let created = store.ensure_system_assistants(graph_ids).await?;
        if created > 0 {
            log::info!("system assistants created count={created}");
        }

        let arbiters: Vec<Arbiter> = (0..threads_or_cpus(settings.runtime.arbiters))
            .map(|_| Arbiter::new())
            .collect();
        let hub = Arc::new(StreamHub::new(settings.stream.limits()));
        let draining = Arc::new(AtomicBool::new(false));
        let registry = ThreadRegistry::new(
            store.clone(),
            engines.clone(),
            arbiters.iter().map(Arbiter::handle).collect(),
            hub.clone(),
            ThreadSettings {
                limits: RunLimits {
                    run: settings.runtime.run_timeout(),
                    node: settings.runtime.node_timeout(),
                },
                on_restart: settings.runtime.on_restart,
                max_attempts: settings.runtime.max_attempts,
                idle: settings.runtime.actor_idle(),
                draining: draining.clone(),
            },
        )
        .start();
        let stranded = store.settle_stranded_threads().await?;
        if stranded > 0 {
            log::warn!("threads marked busy with no run in flight settled count={stranded}");
        }
        if let Some(sweeper) = crate::retention::Sweeper::new(store.clone(), &settings.retention) {
            sweeper.start();
        }
        // Threads with pending or running runs get their actor now, which resumes their queue.
        let in_flight = store.threads_in_flight().await?;
        if !in_flight.is_empty() {
            log::info!(
                "recovering threads with runs in flight count={}",
                in_flight.len()
            );
        }
        for thread_id in in_flight {
            registry.send(GetThread { thread_id }).await?;
        }

        let server_settings = &settings.server;
        let body_limit = server_settings.body_limit_bytes;
        let state = web::Data::new(AppState {
            runtime: Runtime::new(
                store.clone(),
                engines,
                registry.clone(),
                draining.clone(),
                settings.runtime.refuse_client_tool_calls,
            ),
            body_limit,
            heartbeat: settings.stream.heartbeat(),
        });
        let browser = Arc::new(http::BrowserPolicy::new(server_settings));
        log::info!("browser requests allowed {browser}");
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::Data::from(browser.clone()))
                .app_data(web::PayloadConfig::new(body_limit))
                .wrap(from_fn(http::check_head))
                .wrap(
                    ErrorHandlers::new()
                        .handler(StatusCode::BAD_REQUEST, http::unreadable_body)
                        .handler(StatusCode::PAYLOAD_TOO_LARGE, http::payload_too_large),
                )
                // CORS answers preflights and marks responses for the origins the policy allows;
                // before it, requests from hosts or origins the policy refuses are answered.
                .wrap(http::cors(browser.clone()))
                .wrap(from_fn(http::refuse_foreign))
                .wrap(Logger::new("%a \"%r\" %s %b %Dms"))
                .configure(http::routes)
        })
        .workers(threads_or_cpus(server_settings.workers))
        // Signals are ours: the runs drain before the listener closes (`run_until_stopped`).
        .disable_signals()
        // Requests still open once the runs are drained (streams of stopped runs) get this long.
        .shutdown_timeout(2)
        // actix-http checks its keep-alive timer before it reads the socket: a connection idle
        // past the timeout is closed unanswered even when a request already arrived on it (as
        // after the process was paused). A timeout longer than clients' pool expiry means the
        // client always gives up an idle connection first (docs/runtime.md, "Connections").
        .keep_alive(match server_settings.keep_alive() {
            idle if idle.is_zero() => KeepAlive::Disabled,
            idle => KeepAlive::Timeout(idle),
        })
        // Stream events and the end of a chunked body go out at once, not after a delayed ACK.
        .on_connect(|connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        // Room for a thousand clients connecting at once (a burst of stream subscribers) without
        // the kernel dropping connection attempts.
        .backlog(LISTEN_BACKLOG)
        .bind((server_settings.host.as_str(), server_settings.port))
        .with_context(|| {
            format!(
                "cannot listen on {}:{}",
                server_settings.host, server_settings.port
            )
        })?;
        let port = server
            .addrs()
            .first()
            .map(|address| address.port())
            .context("the server bound no address")?;
        let server = server.run();
        log::info!("listening address=http://{}:{port}", server_settings.host);
        Ok(Application {
            port,
            server,
            registry,
            draining,
            grace: server_settings.shutdown_grace(),
            _arbiters: arbiters,
        })
    }

    /// The bound port (useful when the settings asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The thread registry.
    pub fn registry(&self) -> Addr<ThreadRegistry> {
        self.registry.clone()
    }

    /// A handle that can stop the HTTP server.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: new runs get 503, running
    /// runs get the grace period to finish, the rest are stopped to resume at the next start,
    /// then the listener closes. Also returns when the server is stopped through a handle.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = actix_web::rt::spawn(self.server);
        let signal = tokio::select! {
            served = &mut server => return served.unwrap_or_else(|join| Err(std::io::Error::other(join))),
            signal = shutdown_signal() => signal?,
        };
        log::info!(
            "shutdown requested signal={signal}: refusing new runs, grace_ms={}",
            self.grace.as_millis()
        );
        self.draining.store(true, Ordering::SeqCst);
        let report = self
            .registry
            .send(Shutdown { grace: self.grace })
            .await
            .unwrap_or_default();
        log::info!(
            "shutdown: runs drained; stopped to resume at the next start={}",
            report.stopped
        );
        handle.stop(true).await;
        let served = server
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join)));
        log::info!("shutdown complete");
        served
    }
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}
