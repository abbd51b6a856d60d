#include "common/tensor.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace synthgrad {

std::string ShapeString(const Matrix& m) {
  return absl::StrCat("[", m.rows(), ", ", m.cols(), "]");
}

bool AllFinite(const Matrix& m) { return m.allFinite(); }

double Cosine(const Matrix& a, const Matrix& b) {
  const double dot = (a.cast<double>().array() * b.cast<double>().array()).sum();
  const double norms = a.cast<double>().norm() * b.cast<double>().norm();
  if (norms == 0.0) return 0.0;
  return dot / norms;
}

}  // namespace synthgrad
