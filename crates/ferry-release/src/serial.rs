//! The one rule for serials: they only grow, by checked arithmetic, and never past
//! [`MAX_SERIAL`]. A pointer above the limit is refused by agents and publishers alike, so a
//! hostile or buggy writer cannot push a channel to the top of `u64` where the next publish
//! would wrap and freeze the fleet.

/// The highest serial ferry writes or accepts: 2^53, the largest integer every JSON reader
/// keeps exactly. A channel advancing once a second would take 285 million years to get here.
pub const MAX_SERIAL: u64 = 1 << 53;

/// True when `serial` is one ferry could have written (1 ..= [`MAX_SERIAL`]).
pub fn serial_is_possible(serial: u64) -> bool {
    (1..=MAX_SERIAL).contains(&serial)
}

/// The serial after `serial`, or `None` when that would pass [`MAX_SERIAL`].
pub fn next_serial(serial: u64) -> Option<u64> {
    serial.checked_add(1).filter(|next| *next <= MAX_SERIAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_stop_at_the_limit_instead_of_wrapping() {
        assert_eq!(next_serial(0), Some(1));
        assert_eq!(next_serial(41), Some(42));
        assert_eq!(next_serial(MAX_SERIAL - 1), Some(MAX_SERIAL));
        assert_eq!(next_serial(MAX_SERIAL), None);
        assert_eq!(next_serial(u64::MAX - 1), None);
        assert_eq!(next_serial(u64::MAX), None);
        assert!(!serial_is_possible(0));
        assert!(serial_is_possible(MAX_SERIAL));
        assert!(!serial_is_possible(u64::MAX - 1));
    }
}
