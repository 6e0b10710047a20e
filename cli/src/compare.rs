//! `profwatch compare`: asks a server to compare two builds of a service per endpoint
//! (`GET /api/v1/compare`) and prints the answer as a table or JSON.

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The profwatch server, e.g. http://127.0.0.1:4040.
    #[arg(long, env = "PROFWATCH_SERVER")]
    pub server: String,
    #[arg(long)]
    pub service: String,
    /// The baseline, `build=NAME`.
    #[arg(long)]
    pub baseline: String,
    /// The candidate, `build=NAME`.
    #[arg(long)]
    pub candidate: String,
    /// Only this endpoint.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Bearer token.
    #[arg(long, env = "PROFWATCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `build=NAME` (the only selector a compare takes today).
fn build_selector(flag: &str, s: &str) -> anyhow::Result<String> {
    match s.split_once('=') {
        Some(("build", b)) if !b.is_empty() => Ok(b.to_owned()),
        _ => anyhow::bail!("--{flag} takes build=NAME, got {s:?}"),
    }
}

/// Runs the compare on the server and prints it; `Ok(true)` when something regressed.
pub fn run(args: CompareArgs) -> anyhow::Result<bool> {
    let baseline = build_selector("baseline", &args.baseline)?;
    let candidate = build_selector("candidate", &args.candidate)?;
    let mut params = vec![
        ("service", args.service.clone()),
        ("baseline", baseline),
        ("candidate", candidate),
    ];
    if let Some(e) = &args.endpoint {
        params.push(("endpoint", e.clone()));
    }
    profwatch_model::tls::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()?;
    let mut req = client
        .get(format!(
            "{}/api/v1/compare",
            args.server.trim_end_matches('/')
        ))
        .query(&params);
    if let Some(t) = &args.token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .with_context(|| format!("reaching {}", args.server))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().context("reading the answer")?;
    if !status.is_success() {
        anyhow::bail!(
            "the server answered {status}: {}",
            body["error"].as_str().unwrap_or("(no message)")
        );
    }
    let regressed = body["regressed"].as_bool().unwrap_or(false);
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&body)?),
        "table" => {
            let endpoints: Vec<profwatch_analyzer::Comparison> =
                serde_json::from_value(body["endpoints"].clone())
                    .context("reading the endpoints of the answer")?;
            println!(
                "{} {} vs {}:\n{}",
                args.service,
                body["candidate"].as_str().unwrap_or("?"),
                body["baseline"].as_str().unwrap_or("?"),
                profwatch_analyzer::report::table(&endpoints)
            );
        }
        other => anyhow::bail!("--format takes table or json, got {other:?}"),
    }
    Ok(regressed)
}
