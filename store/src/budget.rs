//! The byte budget of one read ([`crate::MAX_READ_BYTES`]).
//!
//! A read hands out records in order while they fit, and always at least
//! one, so a caller continuing from the last record it got always gets
//! further. Once a record is refused, every later one is too: a read returns
//! a prefix of what was asked for (for `read_before`, a suffix).

use logbook_core::Record;

use crate::session::record_size;

/// What one read has left to hand out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadBudget {
    left: usize,
    admitted_any: bool,
    cut: bool,
}

impl ReadBudget {
    pub(crate) fn new(bytes: usize) -> ReadBudget {
        ReadBudget { left: bytes, admitted_any: false, cut: false }
    }

    /// Whether a record counted as `size` bytes is part of the read.
    pub(crate) fn admit_size(&mut self, size: usize) -> bool {
        if self.cut {
            return false;
        }
        if self.admitted_any && size > self.left {
            self.cut = true;
            return false;
        }
        self.left = self.left.saturating_sub(size);
        self.admitted_any = true;
        true
    }

    /// [`ReadBudget::admit_size`] of `record`, counted as the tail cache counts it.
    pub(crate) fn admit(&mut self, record: &Record) -> bool {
        self.admit_size(record_size(record))
    }

    /// Ends the read here: the records after the ones admitted were found not
    /// to fit by a bound on their sizes (see `Core::read_located`), without
    /// being offered one by one.
    pub(crate) fn stop(&mut self) {
        self.cut = true;
    }

    /// Whether a record was refused: the read stops short of what was asked.
    pub(crate) fn is_cut(&self) -> bool {
        self.cut
    }
}

#[cfg(test)]
mod tests {
    use super::ReadBudget;

    #[test]
    fn the_first_record_always_fits_and_a_refusal_ends_the_read() {
        let mut budget = ReadBudget::new(10);
        assert!(budget.admit_size(25), "the first record is admitted whatever its size");
        assert!(!budget.admit_size(1), "nothing is left");
        assert!(budget.is_cut());

        let mut budget = ReadBudget::new(10);
        assert!(budget.admit_size(6));
        assert!(!budget.admit_size(5));
        assert!(!budget.admit_size(1), "a later, smaller record does not jump the queue");
        assert!(budget.is_cut());

        let mut budget = ReadBudget::new(10);
        assert!(budget.admit_size(4));
        assert!(budget.admit_size(6), "exactly the budget fits");
        assert!(!budget.is_cut());
    }
}
