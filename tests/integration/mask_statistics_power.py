"""Power of the checks in test_mask_statistics_t4rec.py at their sample sizes: prints, per check, the
noncentrality of its alternative per row, measured on two large samples of fastmask (default and
moved), and P(no rejection) at the test's number of rows. Run with the integration environment:

    .venv-t4r/bin/python tests/integration/mask_statistics_power.py [rows of the large samples]
"""
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(here), str(here.parent)]

import mask_statistics as stats  # noqa: E402
import test_mask_statistics_t4rec as checks  # noqa: E402


def main(large_rows: int = 96_000) -> None:
    print(f"{'config':18} {'check':12} {'alternative':16} {'rows':>6} {'df':>3} {'lambda/row':>10} "
          f"{'lambda':>8} {'1 - power':>9}")
    for name, check in checks.CASES:
        config = checks.CONFIGS[name]
        large = config._replace(rows=large_rows)
        move = checks.move_of(name, check)
        result = checks.compare(check, large, checks.fastmask_sample(large, seed=1),
                                checks.moved_sample(large, move, seed=2))
        per_row = max(result.statistic - result.df, 0.0) / large_rows
        noncentrality = per_row * config.rows
        print(f"{name:18} {check:12} {move:16} {config.rows:6} {result.df:3} {per_row:10.5f} "
              f"{noncentrality:8.1f} {stats.miss_probability(noncentrality, result.df):9.1e}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
