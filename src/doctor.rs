//! `keygate doctor` (placeholder: the hardware engineer replaces this with the real checks).
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub checks: Vec<String>,
}

impl DoctorReport {
    pub fn ok(&self) -> bool {
        true
    }
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

pub fn run_doctor() -> DoctorReport {
    DoctorReport { checks: Vec::new() }
}
