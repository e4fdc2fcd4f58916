//! Plans cached on a parsed statement, so a prepared statement is bound and optimized once per
//! schema version (and parameter types) instead of at every Execute. The plan takes parameter
//! values only when it runs, so one plan serves every execution.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::binder::StatementKind;
use crate::plan::{OutputColumn, Plan};
use crate::types::DataType;

/// A bound and optimized statement, valid for one schema version and one set of declared
/// parameter types.
#[derive(Debug)]
pub struct CachedPlan {
    /// The schema version its tables were bound against.
    pub version: u64,
    /// The parameter types the client declared when it was bound.
    pub declared: Vec<DataType>,
    pub kind: StatementKind,
    pub columns: Option<Vec<OutputColumn>>,
    /// The bound type of each parameter.
    pub param_types: Vec<DataType>,
    pub plan: Plan,
    /// The privileges running it takes, per table (checked at every execution, against the
    /// current schema's grants).
    pub needs: Vec<(String, crate::users::Privileges)>,
}

/// The plan slot a parsed statement carries; clones share it.
#[derive(Clone, Default)]
pub struct PlanCache(Arc<Mutex<Option<Arc<CachedPlan>>>>);

impl PlanCache {
    /// The cached plan, if it was bound for `version` and `declared`.
    pub fn get(&self, version: u64, declared: &[DataType]) -> Option<Arc<CachedPlan>> {
        let slot = self.0.lock();
        slot.as_ref()
            .filter(|p| p.version == version && p.declared == declared)
            .cloned()
    }

    /// Replaces the cached plan.
    pub fn put(&self, plan: Arc<CachedPlan>) {
        *self.0.lock() = Some(plan);
    }
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.0.lock().as_ref().map(|p| p.version);
        f.debug_struct("PlanCache")
            .field("version", &version)
            .finish()
    }
}

/// A cache never makes two statements differ.
impl PartialEq for PlanCache {
    fn eq(&self, _other: &PlanCache) -> bool {
        true
    }
}
