#include <recur/recur.hpp>
#include <iostream>
#include <xtensor/xio.hpp>
using namespace recur;
int main() {
  Tape<double> t;
  auto a = t.variable(xt::xarray<double>{{1.0, 2.0}, {3.0, 4.0}});
  auto b = t.variable(xt::xarray<double>{{0.5, 0.2}, {-1.0, 0.3}});
  auto y = sum(tanh(matmul(a, b)) * a);
  t.backward(y);
  std::cout << y.item() << "\n" << a.grad() << "\n" << b.grad() << "\n";
  auto rep = gradcheck([](Tape<double>&, const std::vector<Var<double>>& x) { return softmax(linear(x[0], x[1]) * x[0], 0); },
                       {xt::xarray<double>{{1.0, 2.0}, {3.0, 4.0}}, xt::xarray<double>{{0.3, -0.2}, {0.1, 0.7}}});
  std::cout << rep.summary() << "\n";
}
