export async function runEnrollBench(): Promise<string> {
  return "todo";
}
