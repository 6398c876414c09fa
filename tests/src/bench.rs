//! What the benchmarks share: their numeric arguments (cargo bench passes `--bench` too).

use anyhow::Context;

/// The command line's numbers, in order, each with its default; `names` say what they mean
/// (for the error when one is not a number).
pub fn numbers<const N: usize>(
    names: [&str; N],
    defaults: [usize; N],
) -> anyhow::Result<[usize; N]> {
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .collect();
    let mut numbers = defaults;
    for ((number, name), text) in numbers.iter_mut().zip(names).zip(&given) {
        *number = text
            .parse()
            .with_context(|| format!("{name} is a number, not {text:?}"))?;
    }
    Ok(numbers)
}
