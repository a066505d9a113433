/** postject ships no types; the one call agent/cni/build-plugin.ts makes. */
declare module "postject" {
  export function inject(
    file: string,
    resourceName: string,
    resourceData: Buffer,
    options?: { sentinelFuse?: string; overwrite?: boolean },
  ): Promise<void>;
}
