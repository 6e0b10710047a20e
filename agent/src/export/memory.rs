//! An exporter that keeps events in memory, for tests and for embedding.

use std::sync::{Arc, Mutex, PoisonError};

use profwatch_model::RequestEvent;

use super::{ExportError, Exporter};

/// Collects every exported event; clones share the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryExporter {
    events: Arc<Mutex<Vec<RequestEvent>>>,
}

impl MemoryExporter {
    pub fn new() -> MemoryExporter {
        MemoryExporter::default()
    }

    /// A copy of everything exported so far.
    pub fn events(&self) -> Vec<RequestEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes everything exported so far.
    pub fn take(&self) -> Vec<RequestEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Exporter for MemoryExporter {
    fn export(&mut self, events: &[RequestEvent]) -> Result<(), ExportError> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(events);
        Ok(())
    }
}
