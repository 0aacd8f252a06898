//! The value the f64 interpreter passes between ops: one sequence's
//! matrix, row-major.

/// A per-sequence matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub v: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat {
            rows,
            cols,
            v: vec![0.0; rows * cols],
        }
    }

    pub(super) fn at(&self, r: usize, c: usize) -> f64 {
        self.v[r * self.cols + c]
    }

    pub(super) fn map(&self, f: impl Fn(f64) -> f64) -> Mat {
        Mat {
            rows: self.rows,
            cols: self.cols,
            v: self.v.iter().map(|&x| f(x)).collect(),
        }
    }

    pub(super) fn matmul(&self, b: &Mat) -> Mat {
        self.times(&b.v, b.cols)
    }

    /// `self · B` for a row-major `B` of `self.cols` rows and `cols` columns.
    pub(super) fn times(&self, b: &[f64], cols: usize) -> Mat {
        let mut out = Mat::zeros(self.rows, cols);
        for i in 0..self.rows {
            let o = &mut out.v[i * cols..(i + 1) * cols];
            for k in 0..self.cols {
                let a = self.at(i, k);
                if a == 0.0 {
                    continue;
                }
                for (x, w) in o.iter_mut().zip(&b[k * cols..(k + 1) * cols]) {
                    *x += a * w;
                }
            }
        }
        out
    }

    /// The given rows, in order.
    pub(super) fn gather(&self, rows: &[usize]) -> Mat {
        let c = self.cols;
        Mat {
            rows: rows.len(),
            cols: c,
            v: rows
                .iter()
                .flat_map(|&t| self.v[t * c..(t + 1) * c].iter().copied())
                .collect(),
        }
    }

    pub(super) fn transpose(&self) -> Mat {
        let mut out = Mat::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                out.v[j * self.rows + i] = self.at(i, j);
            }
        }
        out
    }

    pub(super) fn rows_softmax(&mut self, causal: bool) {
        for i in 0..self.rows {
            let row = &mut self.v[i * self.cols..(i + 1) * self.cols];
            let end = if causal {
                (i + 1).min(row.len())
            } else {
                row.len()
            };
            let m = row[..end].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut s = 0.0;
            for x in row[..end].iter_mut() {
                *x = (*x - m).exp();
                s += *x;
            }
            for x in row[..end].iter_mut() {
                *x /= s;
            }
            for x in row[end..].iter_mut() {
                *x = 0.0;
            }
        }
    }
}
