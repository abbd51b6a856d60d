// Dense float32 matrices used by every layer, loss and optimizer.
//
// A batch is a Matrix with one example per row. Row-major storage matches the
// packing of synthgrad.v1.Tensor, so conversion is a single copy.
#ifndef SYNTHGRAD_COMMON_TENSOR_H_
#define SYNTHGRAD_COMMON_TENSOR_H_

#include <string>

#include <Eigen/Core>

namespace synthgrad {

using Matrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Returns "[rows, cols]".
std::string ShapeString(const Matrix& m);

// Returns true when no entry is NaN or infinite.
bool AllFinite(const Matrix& m);

// Cosine similarity of the two matrices read as flat vectors. Returns 0 when
// either is all zeros. The shapes must match.
double Cosine(const Matrix& a, const Matrix& b);

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_TENSOR_H_
