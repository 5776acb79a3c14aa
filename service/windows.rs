//! The Windows service: install/uninstall/start/stop/status through the service manager (SCM),
//! and the service itself (`symcascade service run`, started by the SCM).
//!
//! Data flow of the running service: `main` loads the config and sets up logging (a
//! daily-rotated file, `%ProgramData%\symcascade\logs` unless `[log] file` says otherwise),
//! parks both in [`JOB`] and hands the thread to the SCM's dispatcher
//! (`service_dispatcher::start`, which blocks until the service has stopped). The SCM calls
//! [`service_main`] on a thread of its own: it registers the control handler (Stop and
//! Shutdown flip a `watch` channel), reports StartPending, checks the config with
//! `Daemon::start`, reports Running and runs `Daemon::run` with the channel as its shutdown
//! future. When told to stop it reports StopPending with a wait hint of `shutdown_grace` plus
//! a margin (and a new checkpoint every second), lets the agent finish or drop its in-flight
//! copies, and reports Stopped — with a service-specific exit code when it could not start,
//! which the SCM writes to the System event log (event 7024) and which triggers the
//! recovery actions set at install.
//!
//! Wine (used to smoke-test this in CI) lacks a few SCM calls; see [`best_effort`].

use super::{Host, ServiceCmd};
use anyhow::{Context, Result, anyhow, bail};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use symcascade::config::{Config, LogSection};
use symcascade::sympath::Location;
use windows_service::service::{
    Service, ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

/// The service's name (`sc query symcascade`).
pub const SERVICE_NAME: &str = "symcascade";
const DISPLAY_NAME: &str = "symcascade symbol store agent";
const DESCRIPTION: &str = "Keeps debugger symbol stores warm: replicates requested symbol \
    files from the main office store into the branch share and this machine's local store \
    (symcascade run as a service).";
/// Environment variable holding the password of a user account given with `--account`.
const PASSWORD_ENV: &str = "SYMCASCADE_SERVICE_PASSWORD";

/// Wait hint while starting: config check and the first status; the agent starts in well
/// under a second, the SCM's default patience (30 s) is not needed.
const START_WAIT_HINT: Duration = Duration::from_secs(10);
/// Added to `shutdown_grace` for the stop wait hint: dropping in-flight copies, the last
/// status file, the runtime's shutdown and the log flush.
const STOP_MARGIN: Duration = Duration::from_secs(10);
/// Service-specific exit codes (shown by `sc query` and in the System event log).
const EXIT_CONFIG: u32 = 1;
const EXIT_AGENT: u32 = 2;

// Win32 error codes we turn into advice.
const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_EXISTS: i32 = 1073;
const ERROR_SERVICE_MARKED_FOR_DELETE: i32 = 1072;

/// Runs a `service` subcommand.
pub fn main(cmd: ServiceCmd, host: Host<'_>) -> ExitCode {
    let config = host
        .config
        .clone()
        .unwrap_or_else(|| host.default_config.clone());
    let result = match cmd {
        ServiceCmd::Run => return run_dispatcher(&config, &host),
        ServiceCmd::Install { account } => install(&config, account),
        ServiceCmd::Uninstall => uninstall(),
        ServiceCmd::Start => start(),
        ServiceCmd::Stop => stop(),
        ServiceCmd::Status => return status(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The Win32 error code behind a `windows_service` error, if any.
fn win32_code(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

/// A `windows_service` error with the Win32 message and, where there is one, advice.
fn scm_error(e: windows_service::Error, what: &str) -> anyhow::Error {
    let advice = match win32_code(&e) {
        Some(ERROR_ACCESS_DENIED) => " (run from an elevated prompt: Administrator)",
        Some(ERROR_SERVICE_DOES_NOT_EXIST) => " (not installed: `symcascade service install`)",
        Some(ERROR_SERVICE_EXISTS) => " (already installed: `symcascade service uninstall` first)",
        Some(ERROR_SERVICE_MARKED_FOR_DELETE) => {
            " (being removed: close Services/sc windows holding it open, then retry)"
        }
        _ => "",
    };
    let detail = match &e {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    };
    anyhow!("{what}: {detail}{advice}")
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access)
        .map_err(|e| scm_error(e, "opening the service manager"))
}

fn open(access: ServiceAccess) -> Result<Service> {
    manager(ServiceManagerAccess::CONNECT)?
        .open_service(SERVICE_NAME, access)
        .map_err(|e| scm_error(e, "opening the service"))
}

/// Whether this process runs under Wine (ntdll exports `wine_get_version` there and only
/// there: Wine's documented way to tell).
fn running_under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: both calls take NUL-terminated static strings and only return a handle or a
    // function pointer that we test for null and never call; ntdll is mapped into every
    // process, so the module handle needs no reference counting.
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

/// One optional configuration call at install. On Windows a failure is an error (the install
/// is rolled back): an admin who asked for recovery actions must not silently get none. Wine's
/// service manager lacks two of them (delayed start, recovery on non-crash failures: it answers
/// ERROR_INVALID_LEVEL), so under Wine a failure is a warning — the CI smoke test runs there,
/// and what it checks (start, run, stop) does not depend on them.
fn best_effort(wine: bool, what: &str, r: windows_service::Result<()>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if wine => {
            eprintln!("warning: {}; Wine lacks it, ignored", scm_error(e, what));
            Ok(())
        }
        Err(e) => Err(scm_error(e, what)),
    }
}

fn install(config: &Path, account: Option<String>) -> Result<()> {
    let config =
        std::path::absolute(config).with_context(|| format!("config file {}", config.display()))?;
    // Check the config now: a service that cannot start at boot is a worse place to find out.
    let loaded = Config::load(&config).map_err(|e| {
        anyhow!("{e} (the service reads its config from this file; create it first, e.g. from examples/desktop.toml)")
    })?;
    let exe = std::env::current_exe().context("locating symcascade.exe")?;
    let password = account
        .as_deref()
        .filter(|a| !symcascade::platform::is_builtin_service_account(a))
        .and_then(|_| std::env::var_os(PASSWORD_ENV));
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.clone(),
        launch_arguments: vec![
            "service".into(),
            "run".into(),
            "--config".into(),
            config.clone().into_os_string(),
        ],
        dependencies: vec![],
        account_name: account.clone().map(OsString::from),
        account_password: password,
    };
    let service = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?
        .create_service(
            &info,
            ServiceAccess::QUERY_CONFIG
                | ServiceAccess::CHANGE_CONFIG
                | ServiceAccess::QUERY_STATUS
                | ServiceAccess::DELETE,
        )
        .map_err(|e| scm_error(e, "creating the service"))?;
    if let Err(e) = configure(&service) {
        // Leave nothing half-installed behind.
        let _ = service.delete();
        return Err(e);
    }
    let logs = loaded
        .log
        .file
        .unwrap_or_else(|| symcascade::platform::default_log_file(|k| std::env::var(k).ok()));
    println!(
        "installed service {SERVICE_NAME} ({}): automatic (delayed) start, restart on failure",
        account.as_deref().unwrap_or("LocalSystem")
    );
    println!(
        "  command: \"{}\" service run --config \"{}\"",
        exe.display(),
        config.display()
    );
    println!("  logs:    {} (daily rotated)", logs.display());
    println!("start it with `symcascade service start`");
    Ok(())
}

/// Description, delayed automatic start and recovery actions (restart after 10 s, then 60 s,
/// then every 60 s; the failure count resets after a day), also for a non-crash failure (the
/// service stopping with an exit code, e.g. a config error after an edit).
fn configure(service: &Service) -> Result<()> {
    let wine = running_under_wine();
    best_effort(
        wine,
        "setting the description",
        service.set_description(DESCRIPTION),
    )?;
    best_effort(
        wine,
        "setting delayed automatic start",
        service.set_delayed_auto_start(true),
    )?;
    let restart = |s| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(s),
    };
    best_effort(
        wine,
        "setting the recovery actions",
        service.update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart(10), restart(60), restart(60)]),
        }),
    )?;
    best_effort(
        wine,
        "enabling recovery on non-crash failures",
        service.set_failure_actions_on_non_crash_failures(true),
    )
}

fn uninstall() -> Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)?;
    let st = service
        .query_status()
        .map_err(|e| scm_error(e, "querying the service"))?;
    if st.current_state != ServiceState::Stopped {
        println!("stopping the service first");
        stop_and_wait(&service)?;
    }
    service
        .delete()
        .map_err(|e| scm_error(e, "deleting the service"))?;
    drop(service);
    // DeleteService only marks it; it is gone once every handle is closed. Wait briefly so that
    // a following `install` or `sc query` sees the end state.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match manager(ServiceManagerAccess::CONNECT)?
            .open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS)
        {
            Err(e) if win32_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => break,
            _ if Instant::now() > deadline => {
                println!(
                    "service {SERVICE_NAME} marked for deletion (removed when the last handle to it closes)"
                );
                return Ok(());
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    println!("uninstalled service {SERVICE_NAME}");
    Ok(())
}

fn start() -> Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::START)?;
    service
        .start(&[] as &[&OsStr])
        .map_err(|e| scm_error(e, "starting the service"))?;
    let began = Instant::now();
    let st = wait_while(&service, ServiceState::StartPending)?;
    match st.current_state {
        ServiceState::Running => {
            println!(
                "service {SERVICE_NAME} running (pid {}) after {:.2} s",
                st.process_id.unwrap_or(0),
                began.elapsed().as_secs_f64()
            );
            Ok(())
        }
        other => bail!(
            "the service did not start: {other:?}, {} (see its log)",
            describe_exit(st.exit_code)
        ),
    }
}

fn stop() -> Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?;
    let st = service
        .query_status()
        .map_err(|e| scm_error(e, "querying the service"))?;
    if st.current_state == ServiceState::Stopped {
        println!("service {SERVICE_NAME} already stopped");
        return Ok(());
    }
    stop_and_wait(&service)
}

fn stop_and_wait(service: &Service) -> Result<()> {
    let began = Instant::now();
    let first = service
        .stop()
        .map_err(|e| scm_error(e, "stopping the service"))?;
    // The largest wait hint the service announced while stopping is what we hold it to.
    let mut hint = first.wait_hint;
    let st = wait_until(service, |st| {
        if st.current_state == ServiceState::StopPending {
            hint = hint.max(st.wait_hint);
        }
        st.current_state != ServiceState::StopPending && st.current_state != ServiceState::Running
    })?;
    let took = began.elapsed();
    if st.current_state != ServiceState::Stopped {
        bail!("the service is {:?}, not stopped", st.current_state);
    }
    println!(
        "service {SERVICE_NAME} stopped in {:.2} s (wait hint {} s), {}",
        took.as_secs_f64(),
        hint.as_secs(),
        describe_exit(st.exit_code)
    );
    Ok(())
}

/// Polls until the state leaves `state`.
fn wait_while(service: &Service, state: ServiceState) -> Result<ServiceStatus> {
    wait_until(service, |st| st.current_state != state)
}

/// Polls the service every 100 ms until `done`; gives up, as the SCM does, when the checkpoint
/// has not moved for longer than the current wait hint (at least 5 s).
fn wait_until(
    service: &Service,
    mut done: impl FnMut(&ServiceStatus) -> bool,
) -> Result<ServiceStatus> {
    let mut last = (u32::MAX, Instant::now());
    loop {
        let st = service
            .query_status()
            .map_err(|e| scm_error(e, "querying the service"))?;
        if done(&st) {
            return Ok(st);
        }
        if st.checkpoint != last.0 {
            last = (st.checkpoint, Instant::now());
        } else if last.1.elapsed() > st.wait_hint.max(Duration::from_secs(5)) {
            bail!(
                "the service stayed {:?} past its wait hint ({} s) without progress",
                st.current_state,
                st.wait_hint.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn describe_exit(code: ServiceExitCode) -> String {
    match code {
        ServiceExitCode::Win32(0) => "exit code 0".into(),
        ServiceExitCode::Win32(1077) => "never started since install".into(),
        ServiceExitCode::Win32(n) => format!("Win32 exit code {n}"),
        ServiceExitCode::ServiceSpecific(EXIT_CONFIG) => {
            format!("service-specific exit code {EXIT_CONFIG} (bad config)")
        }
        ServiceExitCode::ServiceSpecific(n) => {
            format!("service-specific exit code {n} (agent failed to start)")
        }
    }
}

/// `service status`: exit 0 running, 1 not running or not installed, 2 error.
fn status() -> ExitCode {
    let service = match manager(ServiceManagerAccess::CONNECT).and_then(|m| {
        m.open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
        )
        .map_err(|e| e.into())
    }) {
        Ok(s) => s,
        Err(e) => {
            let missing = e
                .downcast_ref::<windows_service::Error>()
                .and_then(win32_code)
                == Some(ERROR_SERVICE_DOES_NOT_EXIST);
            if missing {
                println!("service {SERVICE_NAME}: not installed");
                return ExitCode::from(1);
            }
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let st = match service.query_status() {
        Ok(st) => st,
        Err(e) => {
            eprintln!("error: {:#}", scm_error(e, "querying the service"));
            return ExitCode::from(2);
        }
    };
    let state = match st.current_state {
        ServiceState::Running => format!("running (pid {})", st.process_id.unwrap_or(0)),
        ServiceState::Stopped => format!("stopped, {}", describe_exit(st.exit_code)),
        other => format!("{other:?}"),
    };
    println!("service {SERVICE_NAME}: {state}");
    // The command line tells the admin which config file (and so which log) it uses. Best
    // effort: Wine's QueryServiceConfig answers, but nothing here depends on it.
    if let Ok(c) = service.query_config() {
        println!("  command: {}", c.executable_path.display());
        println!("  start:   {:?}", c.start_type);
        if let Some(a) = &c.account_name {
            println!("  account: {}", a.to_string_lossy());
        }
    }
    if st.current_state == ServiceState::Running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What `main` hands to the service's thread.
struct Job {
    config: Result<Config, String>,
    default_downstream: Location,
}

/// Filled by `main` before the dispatcher starts, taken once by [`service_main`].
static JOB: Mutex<Option<Job>> = Mutex::new(None);

windows_service::define_windows_service!(ffi_service_main, service_main);

/// `symcascade service run`: logging, then the SCM's dispatcher (blocks until stopped).
fn run_dispatcher(config_path: &Path, host: &Host<'_>) -> ExitCode {
    let config = Config::load(config_path).map_err(|e| e.to_string());
    // A service has no console: unless the config names a log file, log under ProgramData.
    let mut log = config
        .as_ref()
        .map(|c| c.log.clone())
        .unwrap_or_else(|_| LogSection::default());
    if log.file.is_none() {
        log.file = Some(symcascade::platform::default_log_file(|k| {
            std::env::var(k).ok()
        }));
    }
    let _guard = (host.init_logging)(&log);
    if let Err(e) = &config {
        // Logged now; reported to the SCM as a service-specific exit code by service_main.
        tracing::error!("service cannot start: {e}");
    }
    *JOB.lock().unwrap_or_else(|p| p.into_inner()) = Some(Job {
        config,
        default_downstream: host.default_downstream.clone(),
    });
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if win32_code(&e) == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) => {
            eprintln!(
                "error: `symcascade service run` is started by the service manager; in a \
                 console use `symcascade run`"
            );
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("service dispatcher: {e:#}");
            eprintln!(
                "error: {:#}",
                scm_error(e, "starting the service dispatcher")
            );
            ExitCode::from(2)
        }
    }
}

/// The service's main, on the SCM's thread.
fn service_main(_args: Vec<OsString>) {
    let Some(job) = JOB.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    if let Err(e) = serve(job) {
        tracing::error!("service failed: {e:#}");
    }
}

/// Reports states to the SCM.
#[derive(Clone, Copy)]
struct Reporter(service_control_handler::ServiceStatusHandle);

impl Reporter {
    fn report(
        &self,
        state: ServiceState,
        checkpoint: u32,
        wait_hint: Duration,
        exit: ServiceExitCode,
    ) {
        let controls_accepted = if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        };
        let r = self.0.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted,
            exit_code: exit,
            checkpoint,
            wait_hint,
            process_id: None,
        });
        if let Err(e) = r {
            tracing::warn!("reporting {state:?} to the service manager: {e:#}");
        }
    }
}

/// The status handle, for the control handler (registered before the handle exists).
static REPORTER: std::sync::OnceLock<Reporter> = std::sync::OnceLock::new();

/// Registers the handler of the service manager's controls: Stop (`sc stop`, Services) and
/// Shutdown (Windows shutting down) both report StopPending with `stop_hint` at once and set
/// `stop`.
fn register_control_handler(
    stop_hint: Duration,
    stop: tokio::sync::watch::Sender<bool>,
) -> Result<service_control_handler::ServiceStatusHandle> {
    service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            // StopPending and its wait hint right away, so that the status ControlService
            // hands back to `service stop` already carries them.
            if let Some(scm) = REPORTER.get() {
                scm.report(
                    ServiceState::StopPending,
                    1,
                    stop_hint,
                    ServiceExitCode::NO_ERROR,
                );
            }
            stop.send_replace(true);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .context("registering the service control handler")
}

/// Starts the daemon (reporting Running only once it has: a bad symbol path fails `service
/// start` with exit code EXIT_CONFIG instead of a service that is "running" and does nothing),
/// then runs it until `stop`, with a fresh StopPending checkpoint every second while it stops.
async fn run_daemon(
    config: symcascade::config::Config,
    dd: symcascade::sympath::Location,
    scm: Reporter,
    stop_hint: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::result::Result<(), (u32, String)> {
    let daemon = match symcascade::daemon::Daemon::start(config, &dd).await {
        Ok(d) => d,
        Err(e) => return Err((EXIT_CONFIG, e.to_string())),
    };
    scm.report(
        ServiceState::Running,
        0,
        Duration::ZERO,
        ServiceExitCode::NO_ERROR,
    );
    tracing::info!(service = SERVICE_NAME, "service running");
    let mut ticker = None;
    let shutdown = async {
        let _ = stop.wait_for(|stop| *stop).await;
        tracing::info!(service = SERVICE_NAME, wait_hint = ?stop_hint, "service stop requested");
        ticker = Some(tokio::spawn(async move {
            for checkpoint in 2.. {
                tokio::time::sleep(Duration::from_secs(1)).await;
                scm.report(
                    ServiceState::StopPending,
                    checkpoint,
                    stop_hint,
                    ServiceExitCode::NO_ERROR,
                );
            }
        }));
    };
    let r = daemon.run(None, shutdown).await;
    if let Some(t) = ticker {
        t.abort();
    }
    r.map_err(|e| (EXIT_AGENT, e.to_string()))
}

fn serve(job: Job) -> Result<()> {
    let stop_hint = job
        .config
        .as_ref()
        .map(|c| c.agent.shutdown_grace)
        .unwrap_or_default()
        + STOP_MARGIN;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = register_control_handler(stop_hint, tx)?;
    let scm = *REPORTER.get_or_init(|| Reporter(handle));
    scm.report(
        ServiceState::StartPending,
        1,
        START_WAIT_HINT,
        ServiceExitCode::NO_ERROR,
    );
    let stopped = |code: u32| {
        scm.report(
            ServiceState::Stopped,
            0,
            Duration::ZERO,
            ServiceExitCode::ServiceSpecific(code),
        )
    };
    let config = match job.config {
        Ok(c) => c,
        Err(e) => {
            stopped(EXIT_CONFIG);
            bail!("config: {e}");
        }
    };
    let rt = match crate::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            stopped(EXIT_AGENT);
            bail!("cannot start the async runtime: {e}");
        }
    };
    let dd = job.default_downstream;
    let result = rt.block_on(run_daemon(config, dd, scm, stop_hint, rx));
    // Blocking file work left behind by dropped copies gets a moment, never the whole hint.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => {
            tracing::info!(service = SERVICE_NAME, "service stopped");
            scm.report(
                ServiceState::Stopped,
                0,
                Duration::ZERO,
                ServiceExitCode::NO_ERROR,
            );
            Ok(())
        }
        Err((code, e)) => {
            stopped(code);
            bail!("{e}")
        }
    }
}
