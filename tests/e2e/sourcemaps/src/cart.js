export function checkout(items) {
  const total = items.reduce((sum, item) => sum + item.price, 0);
  if (total <= 0) {
    throw new Error("cart is empty: nothing to check out");
  }
  return total;
}
